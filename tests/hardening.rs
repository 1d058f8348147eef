//! Defects an outside test found in the running binary (issue "Hardening"), each checked
//! against a real process on a loopback port or a real database: hyper's own answers as
//! problem+json, `--insecure-dev` only on loopback, request ids and no colour in logs, and
//! any number of processes starting at once on one PostgreSQL database.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use common::{orderlog, serve, Server};

use orderlog_store::postgres::testing::TestDatabase;
use serde_json::Value;

/// Sends `request` as it is and returns the whole answer.
fn raw(server: &Server, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(server.address).unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).to_string()
}

fn body_of(response: &str) -> Value {
    serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap()
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split_once("\r\n\r\n")?.0;
    head.lines().find_map(|l| l.split_once(": ").filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

fn token(database: &str, scopes: &str) -> String {
    let made = orderlog(&["token", "create", "--database", database, "--principal", "tester", "--scopes", scopes]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    String::from_utf8(made.stdout).unwrap().trim().to_string()
}

#[test]
fn requests_hyper_cannot_parse_get_problem_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path().join("shop.db").to_str().unwrap(), &["--insecure-dev"], Stdio::null());
    let long = format!("GET /orders/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(128 * 1024));
    let response = raw(&server, long.as_bytes());
    assert!(response.starts_with("HTTP/1.1 414 "), "{}", &response[..response.len().min(200)]);
    assert_eq!(header(&response, "content-type"), Some("application/problem+json"));
    let problem = body_of(&response);
    assert_eq!(problem["status"], 414);
    assert!(problem["detail"].as_str().unwrap().contains("URI is longer"), "{problem}");

    let response = raw(&server, b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    assert_eq!(body_of(&response)["status"], 400);

    // The server still answers normally afterwards.
    let response = raw(&server, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
}

#[test]
fn insecure_dev_refuses_an_address_other_than_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("shop.db");
    let refused =
        orderlog(&["serve", "--database", database.to_str().unwrap(), "--listen", "0.0.0.0:0", "--insecure-dev"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("loopback") && stderr.contains("0.0.0.0:0"), "{stderr}");
}

#[test]
fn error_lines_carry_the_request_id_and_no_colour() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("shop.db");
    let db = database.to_str().unwrap();
    let t = token(db, "analytics");
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = serve(db, &[], Stdio::from(log));
    // A read model's table replaced under the server (by something its projector does not
    // make again) makes its reads fail with a 500.
    let conn = rusqlite::Connection::open(&database).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    conn.execute_batch(
        "BEGIN IMMEDIATE; DROP VIEW IF EXISTS sales_by_day; DROP VIEW IF EXISTS top_skus;
         DROP VIEW IF EXISTS order_status; DROP TABLE rm_order_status;
         CREATE VIEW rm_order_status AS SELECT 1 AS gone; COMMIT;",
    )
    .unwrap();
    let request = format!(
        "GET /reports/sales?from=2026-01-01&to=2026-01-02 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\n\
         X-Request-Id: req-hardening-1\r\nConnection: close\r\n\r\n"
    );
    let response = raw(&server, request.as_bytes());
    assert!(response.starts_with("HTTP/1.1 500 "), "{response}");
    assert_eq!(header(&response, "x-request-id"), Some("req-hardening-1"));
    drop(server);
    let logged = std::fs::read_to_string(&log_path).unwrap();
    assert!(!logged.contains('\u{1b}'), "colour codes in a log file: {logged}");
    let failed: Vec<&str> = logged.lines().filter(|l| l.contains("request failed")).collect();
    assert!(!failed.is_empty(), "the 500 was not logged: {logged}");
    for line in failed {
        assert!(line.contains("req-hardening-1"), "an error line without its request id: {line}");
    }
}

#[test]
fn two_demos_at_once_on_one_postgres_database_both_finish_without_overselling() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDatabase::create());
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_orderlog"))
            .args(["demo", "--database", &db.url, "--orders", "60", "--shoppers", "6", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (run(), run());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["oversold_units"], 0, "{summary}");
    }
    drop(db);
}

#[test]
fn servers_started_at_the_same_instant_on_a_fresh_postgres_database_all_come_up() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDatabase::create());
    let servers: Vec<Child> = (0..4)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_orderlog"))
                .args(["serve", "--database", &db.url, "--listen", "127.0.0.1:0", "--insecure-dev"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in servers {
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let up = line.starts_with("listening on http://");
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        assert!(up, "a server did not come up: {}", String::from_utf8_lossy(&out.stderr));
    }
    drop(db);
}
