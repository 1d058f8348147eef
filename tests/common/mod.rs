//! What the tests of the binary share: running `orderlog`, and `orderlog serve` as a
//! process on a free loopback port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
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

/// One HTTP/1.1 request with a bearer token (none when empty); the status and the JSON body.
pub fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {token}");
    let headers: Vec<(&str, &str)> = if token.is_empty() { vec![] } else { vec![("Authorization", auth.as_str())] };
    request(address, method, path, &headers, &body.map(|b| b.to_string()).unwrap_or_default())
}

/// One HTTP/1.1 request with these headers and this raw body; the status and the JSON body.
pub fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(address).unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{extra}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let (_, payload) = response.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(payload).unwrap_or(serde_json::Value::Null))
}

/// Starts `orderlog gateway-sim` on a free port.
pub fn gateway_sim() -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_orderlog"))
        .args(["gateway-sim", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway-sim starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let address = line
        .trim()
        .strip_prefix("gateway simulator listening on http://")
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();
    Server { child, address }
}
