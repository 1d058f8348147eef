//! The demo's webhook receiver: an HTTP server on loopback that keeps what it is sent, so
//! the demo can report the messages by type and check each signature.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use axum::http::HeaderMap;

/// One message as received: its headers' id, timestamp and signature, and its body.
type Got = (String, i64, String, String);

pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Got>>>,
}

pub async fn start() -> Result<Receiver> {
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/orderlog",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let keep = keep.clone();
            async move {
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let timestamp = header("webhook-timestamp").parse().unwrap_or(0);
                keep.lock().expect("receiver lock").push((
                    header("webhook-id"),
                    timestamp,
                    header("webhook-signature"),
                    body,
                ));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Receiver { url: format!("http://{address}/orderlog"), got })
}

impl Receiver {
    /// Messages received, those whose signature verifies under `secret`, and the count of
    /// each integration event type.
    pub fn counts(&self, secret: &str) -> (u64, u64, BTreeMap<String, u64>) {
        use orderlog_processes::webhooks::sign::verify;
        let got = self.got.lock().expect("receiver lock");
        let mut by_type = BTreeMap::new();
        let mut verified = 0;
        for (id, timestamp, signature, body) in got.iter() {
            verified += u64::from(verify(secret, id, *timestamp, body, signature));
            let kind = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|b| b["type"].as_str().map(str::to_string))
                .unwrap_or_else(|| "unreadable".into());
            *by_type.entry(kind).or_default() += 1;
        }
        (got.len() as u64, verified, by_type)
    }
}
