//! What the tests of the binary share: running `orderlog`, and `orderlog serve` as a
//! process on a free loopback port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};

pub fn orderlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orderlog")).args(args).output().expect("the binary runs")
}

pub struct Server {
    pub child: Child,
    pub address: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `orderlog serve`, its log (stderr) going to `log`.
pub fn serve(database: &str, extra: &[&str], log: Stdio) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_orderlog"))
        .args(["serve", "--database", database, "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let address =
        line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("{line:?}")).parse().unwrap();
    Server { child, address }
}
