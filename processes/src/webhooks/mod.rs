//! Outbound webhooks: other systems subscribe to integration events by URL; a reactor
//! queues one message per subscriber for each event it maps ([`integration`]), and a
//! dispatcher delivers them signed by the Standard Webhooks scheme ([`sign`]).
//!
//! Delivery is at least once. Per subscriber, messages are first sent in log order, one at a
//! time; a message that fails is retried later (exponential backoff with jitter, for up to
//! [`WebhookConfig::retry_window_ms`], then dead-lettered) without holding back the ones after
//! it, and each body carries its log position as `sequence`, so a receiver can restore the
//! order. A 410 answer disables the subscription. Each subscriber has its own delivery task,
//! so a slow or dead one never delays the others or the log; its queue is in the database,
//! and the task holds at most [`DISPATCH_CLAIM_MAX`] messages.

pub mod dispatch;
pub mod integration;
pub mod sign;

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use orderlog_domain::{AggregateKind, DomainEvent, StreamId};
use orderlog_store::RecordedEvent;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::db::{Db, DbError, Value};
use crate::reactor::{OnPark, ReactError, Reactor};

pub use dispatch::{Dispatcher, DISPATCH_CLAIM_MAX};

/// Longest subscriber URL, in bytes.
pub const WEBHOOK_URL_BYTES_MAX: usize = 2_048;
/// Event types one subscription may name.
pub const WEBHOOK_EVENT_TYPES_MAX: usize = 64;
/// How long a rotated-out secret still signs, unless told otherwise.
pub const SECRET_OVERLAP_MS_DEFAULT: i64 = 24 * 3_600 * 1_000;

/// How deliveries are made.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Whether URLs may name loopback, private, link-local or unspecified addresses. Off
    /// in production (a subscriber must not make orderlog call its own network); on for
    /// tests and local receivers.
    pub allow_private: bool,
    /// How long one delivery may take.
    pub timeout_ms: u64,
    /// Pause before the first retry; doubles with each, up to [`WebhookConfig::retry_max_ms`].
    pub first_retry_ms: u64,
    pub retry_max_ms: u64,
    /// After this long since a message was queued, a failed one is dead-lettered.
    pub retry_window_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            allow_private: false,
            timeout_ms: 10_000,
            first_retry_ms: 5_000,
            retry_max_ms: 3_600_000,
            retry_window_ms: 24 * 3_600_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    #[error("{0}")]
    Invalid(String),
    #[error("no webhook '{0}'")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A subscription, as listed (without its secrets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    /// `active`, or `disabled` (by a 410 answer or an operator).
    pub status: String,
    pub status_reason: Option<String>,
    pub created_by: String,
    pub created_ms: i64,
}

/// Checks a subscriber URL: http(s), a host, within the length bound, and — unless
/// `allow_private` — not a loopback, private, link-local or unspecified address.
pub fn check_url(url: &str, allow_private: bool) -> Result<reqwest::Url, WebhookError> {
    let invalid = |why: String| WebhookError::Invalid(format!("url: {why}"));
    if url.len() > WEBHOOK_URL_BYTES_MAX {
        return Err(invalid(format!("longer than {WEBHOOK_URL_BYTES_MAX} bytes")));
    }
    if !url.is_ascii() {
        return Err(invalid("must be ASCII (an international domain name in its xn-- form)".into()));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(format!("'{url}' is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!("scheme '{}' is not http or https", parsed.scheme())));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("credentials in the URL are refused; the signature authenticates orderlog".into()));
    }
    let host = parsed.host().ok_or_else(|| invalid("has no host".into()))?;
    if !allow_private {
        let ip = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost") => {
                return Err(invalid(format!("'{d}' is a loopback name; subscribers must be reachable addresses")))
            }
            url::Host::Domain(_) => None,
        };
        if let Some(ip) = ip.filter(|ip| !routable(ip)) {
            return Err(invalid(format!("{ip} is a loopback, private, link-local or unspecified address")));
        }
    }
    Ok(parsed)
}

fn routable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback() || v6.is_unspecified() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80)
        }
    }
}

fn check_types(event_types: &[String]) -> Result<(), WebhookError> {
    if event_types.is_empty() {
        return Err(WebhookError::Invalid(format!(
            "event_types: name at least one of {}",
            integration::TYPES.join(", ")
        )));
    }
    if event_types.len() > WEBHOOK_EVENT_TYPES_MAX {
        return Err(WebhookError::Invalid(format!("event_types: at most {WEBHOOK_EVENT_TYPES_MAX}")));
    }
    if let Some(unknown) = event_types.iter().find(|t| !integration::TYPES.contains(&t.as_str())) {
        return Err(WebhookError::Invalid(format!(
            "event_types: '{unknown}' is not an integration event type; the types are {}",
            integration::TYPES.join(", ")
        )));
    }
    Ok(())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn webhook_of(row: &[Value]) -> Webhook {
    let text = |i: usize| row[i].text().unwrap_or_default().to_string();
    Webhook {
        id: text(0),
        url: text(1),
        event_types: serde_json::from_str(&text(2)).unwrap_or_default(),
        status: text(3),
        status_reason: row[4].text().map(str::to_string),
        created_by: text(5),
        created_ms: row[6].int().unwrap_or(0),
    }
}

/// The subscriptions and their message queues.
#[derive(Clone)]
pub struct Webhooks {
    db: Arc<dyn Db>,
    config: WebhookConfig,
}

/// A new subscription and its secret (shown once).
#[derive(Clone, Debug, Serialize)]
pub struct Created {
    #[serde(flatten)]
    pub webhook: Webhook,
    pub secret: String,
}

/// One message to one subscriber.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    pub id: String,
    pub webhook: String,
    pub sequence: u64,
    pub event_type: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    pub attempts: u64,
    pub next_attempt_ms: i64,
    pub created_ms: i64,
    pub delivered_ms: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

/// One try at delivering a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub attempt: u64,
    pub at_ms: i64,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

fn message_of(row: &[Value]) -> Message {
    let text = |i: usize| row[i].text().unwrap_or_default().to_string();
    Message {
        id: text(0),
        webhook: text(1),
        sequence: row[2].int().unwrap_or(0).max(0) as u64,
        event_type: text(3),
        status: text(4),
        attempts: row[5].int().unwrap_or(0).max(0) as u64,
        next_attempt_ms: row[6].int().unwrap_or(0),
        created_ms: row[7].int().unwrap_or(0),
        delivered_ms: row[8].int(),
        last_status: row[9].int(),
        last_error: row[10].text().map(str::to_string),
    }
}

impl Webhooks {
    pub fn new(db: Arc<dyn Db>, config: WebhookConfig) -> Webhooks {
        Webhooks { db, config }
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    pub fn db(&self) -> &Arc<dyn Db> {
        &self.db
    }

    /// Registers a subscriber; its secret is returned once.
    pub async fn create(&self, url: &str, event_types: &[String], actor: &str) -> Result<Created, WebhookError> {
        check_url(url, self.config.allow_private)?;
        check_types(event_types)?;
        let mut types = event_types.to_vec();
        types.sort();
        types.dedup();
        let id = format!("wh_{}", &uuid_hex()[..20]);
        let secret = sign::new_secret();
        let created_ms = now_ms();
        self.db
            .execute(
                "INSERT INTO orderlog_webhooks (id, url, event_types, secret, status, created_by, created_ms)
                 VALUES ($1, $2, $3, $4, 'active', $5, $6)",
                vec![
                    id.as_str().into(),
                    url.into(),
                    serde_json::to_string(&types).expect("strings serialize").into(),
                    secret.as_str().into(),
                    actor.into(),
                    created_ms.into(),
                ],
            )
            .await?;
        let webhook = Webhook {
            id,
            url: url.to_string(),
            event_types: types,
            status: "active".into(),
            status_reason: None,
            created_by: actor.to_string(),
            created_ms,
        };
        Ok(Created { webhook, secret })
    }

    pub async fn list(&self) -> Result<Vec<Webhook>, WebhookError> {
        let rows = self
            .db
            .query(
                "SELECT id, url, event_types, status, status_reason, created_by, created_ms FROM orderlog_webhooks ORDER BY created_ms, id",
                vec![],
            )
            .await?;
        Ok(rows.iter().map(|r| webhook_of(r)).collect())
    }

    pub async fn get(&self, id: &str) -> Result<Webhook, WebhookError> {
        let rows = self
            .db
            .query(
                "SELECT id, url, event_types, status, status_reason, created_by, created_ms FROM orderlog_webhooks WHERE id = $1",
                vec![id.into()],
            )
            .await?;
        rows.first().map(|r| webhook_of(r)).ok_or_else(|| WebhookError::NotFound(id.to_string()))
    }

    /// The secrets that sign a message now: the current one, and the previous one while its
    /// overlap lasts.
    pub(crate) async fn secrets(&self, id: &str) -> Result<Vec<String>, WebhookError> {
        let rows = self
            .db
            .query(
                "SELECT secret, previous_secret, previous_until_ms FROM orderlog_webhooks WHERE id = $1",
                vec![id.into()],
            )
            .await?;
        let row = rows.first().ok_or_else(|| WebhookError::NotFound(id.to_string()))?;
        let mut secrets = vec![row[0].text().unwrap_or_default().to_string()];
        if let (Some(previous), Some(until)) = (row[1].text(), row[2].int()) {
            if until > now_ms() {
                secrets.push(previous.to_string());
            }
        }
        Ok(secrets)
    }

    /// A new secret; the old one keeps signing (beside the new) for `overlap_ms`.
    pub async fn rotate(&self, id: &str, overlap_ms: i64) -> Result<String, WebhookError> {
        let secret = sign::new_secret();
        let changed = self
            .db
            .execute(
                "UPDATE orderlog_webhooks SET previous_secret = secret, previous_until_ms = $1, secret = $2 WHERE id = $3",
                vec![(now_ms() + overlap_ms.max(0)).into(), secret.as_str().into(), id.into()],
            )
            .await?;
        if changed == 0 {
            return Err(WebhookError::NotFound(id.to_string()));
        }
        Ok(secret)
    }

    /// Stops deliveries to a subscriber, saying why.
    pub async fn disable(&self, id: &str, reason: &str) -> Result<(), WebhookError> {
        let changed = self
            .db
            .execute(
                "UPDATE orderlog_webhooks SET status = 'disabled', status_reason = $1 WHERE id = $2",
                vec![reason.into(), id.into()],
            )
            .await?;
        if changed == 0 {
            return Err(WebhookError::NotFound(id.to_string()));
        }
        Ok(())
    }

    /// The subscriber's latest messages, newest first, with their attempts.
    pub async fn deliveries(&self, id: &str, limit: u32) -> Result<Vec<(Message, Vec<Attempt>)>, WebhookError> {
        self.get(id).await?;
        let rows = self
            .db
            .query(
                "SELECT id, webhook, seq, event_type, status, attempts, next_attempt_ms, created_ms, delivered_ms, last_status, last_error
                   FROM orderlog_webhook_messages WHERE webhook = $1 ORDER BY seq DESC, id LIMIT $2",
                vec![id.into(), i64::from(limit).into()],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let message = message_of(&row);
            let attempts = self
                .db
                .query(
                    "SELECT attempt, at_ms, status, error, duration_ms FROM orderlog_webhook_attempts WHERE message = $1 ORDER BY attempt",
                    vec![message.id.as_str().into()],
                )
                .await?
                .iter()
                .map(|a| Attempt {
                    attempt: a[0].int().unwrap_or(0).max(0) as u64,
                    at_ms: a[1].int().unwrap_or(0),
                    status: a[2].int(),
                    error: a[3].text().map(str::to_string),
                    duration_ms: a[4].int().unwrap_or(0),
                })
                .collect();
            out.push((message, attempts));
        }
        Ok(out)
    }

    /// The subscriber's messages: pending, delivered and dead.
    pub async fn counts(&self, id: &str) -> Result<(u64, u64, u64), WebhookError> {
        let rows = self
            .db
            .query(
                "SELECT status, COUNT(*) FROM orderlog_webhook_messages WHERE webhook = $1 GROUP BY status",
                vec![id.into()],
            )
            .await?;
        let count = |status: &str| {
            rows.iter().find(|r| r[0].text() == Some(status)).and_then(|r| r[1].int()).unwrap_or(0).max(0) as u64
        };
        Ok((count("pending"), count("delivered"), count("dead")))
    }

    /// Sends a message again (delivered or dead-lettered): it is queued as due now.
    pub async fn redeliver(&self, id: &str, message: &str) -> Result<(), WebhookError> {
        let changed = self
            .db
            .execute(
                "UPDATE orderlog_webhook_messages SET status = 'pending', next_attempt_ms = $1, claimed_until_ms = 0
                  WHERE id = $2 AND webhook = $3",
                vec![now_ms().into(), message.into(), id.into()],
            )
            .await?;
        if changed == 0 {
            return Err(WebhookError::NotFound(format!("{id}/deliveries/{message}")));
        }
        Ok(())
    }

    /// Queues each event's message for every active subscriber of its type, in one
    /// transaction (once: a message's id follows from the subscriber and the event).
    async fn enqueue(&self, events: &[(&RecordedEvent, integration::Integration)]) -> Result<(), DbError> {
        let subscribers = self.subscribers().await?;
        let now = now_ms();
        let mut statements = Vec::new();
        for (event, integration) in events {
            let key = format!("{}\n{}", event.event_id, integration.event_type);
            let body = integration::body(integration, event.position, event.recorded_at);
            statements.extend(queued(&subscribers, integration.event_type, &key, event.position, &body, now));
        }
        if !statements.is_empty() {
            self.db.transaction(statements, false).await?;
        }
        Ok(())
    }

    /// Publishes an integration event that is not an event of the log (a signed checkpoint):
    /// queued once per subscriber and `key`.
    pub async fn publish(
        &self,
        integration: &integration::Integration,
        key: &str,
        sequence: u64,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), DbError> {
        let body = integration::body(integration, sequence, at);
        self.queue(integration.event_type, key, sequence, &body).await
    }

    async fn queue(&self, event_type: &str, key: &str, sequence: u64, body: &str) -> Result<(), DbError> {
        let statements = queued(&self.subscribers().await?, event_type, key, sequence, body, now_ms());
        if !statements.is_empty() {
            self.db.transaction(statements, false).await?;
        }
        Ok(())
    }

    /// Every active subscriber and the types it wants.
    async fn subscribers(&self) -> Result<Vec<(String, Vec<String>)>, DbError> {
        Ok(self
            .db
            .query("SELECT id, event_types FROM orderlog_webhooks WHERE status = 'active'", vec![])
            .await?
            .iter()
            .filter_map(|r| {
                let types = serde_json::from_str::<Vec<String>>(r[1].text().unwrap_or("[]")).ok()?;
                Some((r[0].text()?.to_string(), types))
            })
            .collect())
    }
}

/// The statements that queue one message for each subscriber of `event_type`.
fn queued(
    subscribers: &[(String, Vec<String>)],
    event_type: &str,
    key: &str,
    sequence: u64,
    body: &str,
    now: i64,
) -> Vec<crate::db::Statement> {
    subscribers
        .iter()
        .filter(|(_, types)| types.iter().any(|t| t == event_type))
        .map(|(webhook, _)| {
            let digest = Sha256::digest(format!("{webhook}\n{key}"));
            let id = format!("msg_{}", &hex(&digest)[..24]);
            (
                "INSERT INTO orderlog_webhook_messages
                   (id, webhook, seq, event_type, payload, status, attempts, next_attempt_ms, claimed_until_ms, created_ms)
                 VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, 0, $6) ON CONFLICT (id) DO NOTHING",
                vec![
                    id.into(),
                    webhook.as_str().into(),
                    (sequence.min(i64::MAX as u64) as i64).into(),
                    event_type.into(),
                    body.into(),
                    now.into(),
                ],
            )
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn uuid_hex() -> String {
    hex(&rand::random::<[u8; 16]>())
}

/// The reactor that turns events into queued messages. It stops at an event it cannot
/// queue (the database refused): subscribers must not miss one.
pub struct WebhookReactor {
    webhooks: Webhooks,
}

impl WebhookReactor {
    pub const NAME: &'static str = "webhooks";

    pub fn new(webhooks: Webhooks) -> WebhookReactor {
        WebhookReactor { webhooks }
    }
}

#[async_trait]
impl Reactor for WebhookReactor {
    fn name(&self) -> &'static str {
        WebhookReactor::NAME
    }

    fn on_park(&self) -> OnPark {
        OnPark::Stop
    }

    fn wants(&self, event: &RecordedEvent) -> bool {
        StreamId::kind_of(&event.stream_id) == Some(AggregateKind::Order)
    }

    async fn react(&self, event: &RecordedEvent, decoded: &DomainEvent) -> Result<(), ReactError> {
        let Some(integration) = integration::of(event, decoded) else { return Ok(()) };
        Ok(self.webhooks.enqueue(&[(event, integration)]).await?)
    }

    /// The whole batch's messages in one transaction.
    async fn react_batch(&self, events: &[(&RecordedEvent, DomainEvent)]) -> Result<(), (usize, ReactError)> {
        let mapped: Vec<_> = events.iter().filter_map(|(e, d)| integration::of(e, d).map(|i| (*e, i))).collect();
        self.webhooks.enqueue(&mapped).await.map_err(|e| (0, e.into()))
    }
}
