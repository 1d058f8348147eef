//! Delivering queued messages: one task per active subscriber claims its due messages (a
//! claim is a lease in the database, so two processes never send one message at once),
//! sends each, signed, and records the attempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orderlog_projections::projector::{may_run_or_wait, Gate};
use tokio::sync::watch;

use super::{now_ms, sign, WebhookError, Webhooks};
use crate::db::Value;

/// Messages a subscriber's task claims at a time (what it holds in memory).
pub const DISPATCH_CLAIM_MAX: u32 = 50;
/// How often the dispatcher looks for new subscribers, and an idle task for due messages.
pub const DISPATCH_POLL_MS: u64 = 200;
/// Bytes of a receiver's answer kept with a failed attempt.
pub const ANSWER_BYTES_MAX: usize = 200;

/// Delivers every active subscriber's messages.
pub struct Dispatcher {
    webhooks: Webhooks,
    client: reqwest::Client,
}

/// How one attempt went.
enum Sent {
    Delivered,
    Gone,
    Failed { status: Option<i64>, error: String },
}

impl Dispatcher {
    pub fn new(webhooks: Webhooks) -> Dispatcher {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(webhooks.config().timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("orderlog-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with rustls");
        Dispatcher { webhooks, client }
    }

    /// Runs a task per active subscriber until `stop` turns true; each delivers while `gate`
    /// lets it (job `webhook-delivery:{id}`), so subscribers spread over processes.
    pub async fn run(self, gate: Arc<dyn Gate>, mut stop: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let mut tasks: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        while !*stop.borrow() {
            match this.webhooks.list().await {
                Ok(list) => {
                    tasks.retain(|_, t| !t.is_finished());
                    for webhook in list.into_iter().filter(|w| w.status == "active") {
                        if let std::collections::hash_map::Entry::Vacant(slot) = tasks.entry(webhook.id) {
                            let (this, stop, gate) = (this.clone(), stop.clone(), gate.clone());
                            let id = slot.key().clone();
                            slot.insert(tokio::spawn(async move { this.serve(&id, gate, stop).await }));
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "webhooks: listing subscribers failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(DISPATCH_POLL_MS)) => {}
                _ = stop.changed() => {}
            }
        }
        for (_, task) in tasks {
            let _ = task.await;
        }
    }

    /// Delivers one subscriber's messages until it is disabled or `stop` turns true.
    async fn serve(&self, webhook: &str, gate: Arc<dyn Gate>, mut stop: watch::Receiver<bool>) {
        let job = format!("webhook-delivery:{webhook}");
        while !*stop.borrow() {
            if !may_run_or_wait(&*gate, &job, &mut stop).await {
                continue;
            }
            let pause = match self.deliver_due(webhook).await {
                Ok(Some(0)) => Duration::from_millis(DISPATCH_POLL_MS),
                Ok(Some(_)) => Duration::ZERO,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(webhook, error = %e, "webhooks: delivering failed");
                    Duration::from_millis(DISPATCH_POLL_MS * 5)
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    /// Claims and sends the subscriber's due messages in log order; the number sent, or
    /// `None` once the subscriber is disabled.
    pub async fn deliver_due(&self, webhook: &str) -> Result<Option<usize>, WebhookError> {
        let hook = self.webhooks.get(webhook).await?;
        if hook.status != "active" {
            return Ok(None);
        }
        let db = self.webhooks.db();
        let now = now_ms();
        let due = db
            .query(
                "SELECT id, seq, payload, attempts, created_ms FROM orderlog_webhook_messages
                  WHERE webhook = $1 AND status = 'pending' AND next_attempt_ms <= $2 AND claimed_until_ms < $2
                  ORDER BY seq, id LIMIT $3",
                vec![webhook.into(), now.into(), i64::from(DISPATCH_CLAIM_MAX).into()],
            )
            .await?;
        let lease = now + self.webhooks.config().timeout_ms as i64 * 2 + 1_000;
        // Read once per batch: a rotation takes effect from the next batch.
        let secrets = self.webhooks.secrets(webhook).await?;
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let mut sent = 0;
        for row in due {
            let id = row[0].text().unwrap_or_default().to_string();
            let claimed = db
                .execute(
                    "UPDATE orderlog_webhook_messages SET claimed_until_ms = $1
                      WHERE id = $2 AND status = 'pending' AND claimed_until_ms < $3",
                    vec![lease.into(), id.as_str().into(), now_ms().into()],
                )
                .await?;
            if claimed == 0 {
                continue;
            }
            let payload = row[2].text().unwrap_or_default().to_string();
            let attempts = row[3].int().unwrap_or(0);
            let created_ms = row[4].int().unwrap_or(now);
            let started = Instant::now();
            let at_ms = now_ms();
            let outcome = self.send(&hook.url, &secrets, &id, &payload).await;
            let duration_ms = started.elapsed().as_millis() as i64;
            sent += 1;
            let attempt = attempts + 1;
            let (status_code, error) = match &outcome {
                Sent::Delivered => (Some(200), None),
                Sent::Gone => (Some(410), Some("410 Gone: the subscriber asked to be removed".to_string())),
                Sent::Failed { status, error } => (*status, Some(error.clone())),
            };
            let record = (
                "INSERT INTO orderlog_webhook_attempts (message, attempt, at_ms, status, error, duration_ms)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (message, attempt) DO NOTHING",
                vec![
                    id.as_str().into(),
                    attempt.into(),
                    at_ms.into(),
                    status_code.into(),
                    error.clone().into(),
                    duration_ms.into(),
                ],
            );
            let config = self.webhooks.config();
            let (status, next) = match outcome {
                Sent::Delivered => ("delivered", 0),
                Sent::Gone => ("pending", i64::MAX / 2),
                Sent::Failed { .. } => {
                    let next = now_ms() + backoff_ms(config.first_retry_ms, config.retry_max_ms, attempt, &id);
                    let window_ends = created_ms + config.retry_window_ms as i64;
                    if next > window_ends {
                        ("dead", 0)
                    } else {
                        ("pending", next)
                    }
                }
            };
            let update = (
                "UPDATE orderlog_webhook_messages
                    SET status = $1, attempts = $2, next_attempt_ms = $3, claimed_until_ms = 0,
                        delivered_ms = $4, last_status = $5, last_error = $6
                  WHERE id = $7",
                vec![
                    status.into(),
                    attempt.into(),
                    next.into(),
                    if status == "delivered" { Value::Int(now_ms()) } else { Value::Null },
                    status_code.into(),
                    error.into(),
                    id.as_str().into(),
                ],
            );
            db.transaction(vec![record, update], false).await?;
            if matches!(status_code, Some(410)) {
                self.webhooks.disable(webhook, "the subscriber answered 410 Gone").await?;
                return Ok(None);
            }
        }
        Ok(Some(sent))
    }

    async fn send(&self, url: &str, secrets: &[&str], id: &str, payload: &str) -> Sent {
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign::signature_header(secrets, id, timestamp, payload);
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(payload.to_string());
        match request.send().await {
            Ok(answer) if answer.status().is_success() => Sent::Delivered,
            Ok(answer) if answer.status() == reqwest::StatusCode::GONE => Sent::Gone,
            Ok(answer) => {
                let status = answer.status();
                let body = answer.text().await.unwrap_or_default();
                let body: String = body.chars().take(ANSWER_BYTES_MAX).collect();
                Sent::Failed { status: Some(i64::from(status.as_u16())), error: format!("answered {status}: {body}") }
            }
            Err(e) if e.is_timeout() => Sent::Failed { status: None, error: "timed out".into() },
            Err(e) => Sent::Failed { status: None, error: format!("{e}: {}", source_chain(&e)) },
        }
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        out.push(s.to_string());
        source = s.source();
    }
    out.join(": ")
}

/// The pause before retry `attempt` (1-based): `first` doubled per earlier attempt, at most
/// `max`, plus up to a fifth of it again (spread by the message id, no random source).
pub fn backoff_ms(first: u64, max: u64, attempt: i64, message: &str) -> i64 {
    let doublings = (attempt.max(1) - 1).min(40) as u32;
    let base = first.saturating_mul(1u64 << doublings.min(30)).min(max);
    let digest = <sha2::Sha256 as sha2::Digest>::digest(format!("{message}\n{attempt}").as_bytes());
    let spread = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")) % (base / 5).max(1);
    (base + spread) as i64
}
