//! Signed checkpoints served by the API (scope `audit`): the server's public key, the
//! latest checkpoint of the log — signed when asked if the log has grown since the last one,
//! at most once per `CHECKPOINT_INTERVAL_MS` — and any earlier one by its size. Checkpoints
//! are kept in the database beside the log, whoever signed them (`orderlog serve`, the
//! periodic signer, `orderlog checkpoint`); an auditor keeps its own copies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::Json;
use ed25519_dalek::SigningKey;
use orderlog_replay::checkpoint::{key_id, Checkpoint, TreeFollower};
use orderlog_replay::ReplayError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::Problem;
use crate::Shared;

/// Least time between two checkpoints signed on request.
pub const CHECKPOINT_INTERVAL_MS: u64 = 1_000;
/// How often `orderlog serve` brings the stored Merkle tree up to the log, so that a proof
/// seldom has many events to add first.
pub const TREE_EXTEND_MS: u64 = 200;

/// The server's signing key and when it last signed on request.
pub struct Signer {
    key: SigningKey,
    last: tokio::sync::Mutex<Option<Instant>>,
}

impl Signer {
    pub fn new(key: SigningKey) -> Signer {
        Signer { key, last: tokio::sync::Mutex::new(None) }
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }
}

/// Keeps the stored tree up to the log and, with a signer, signs a checkpoint every `every`
/// while the log grows, until `stopped` turns true, publishing each new one to the
/// subscribers of the integration event `checkpoint.signed`. Failures are logged and tried
/// again.
pub async fn maintain(
    proofs: Arc<TreeFollower>,
    signer: Option<(Arc<Signer>, Duration)>,
    webhooks: Option<orderlog_processes::webhooks::Webhooks>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut signed_at = Instant::now();
    loop {
        if let Err(e) = proofs.extend().await {
            tracing::warn!(error = %e, "the Merkle tree could not be brought up to the log");
        }
        if let Some((signer, every)) = &signer {
            if signed_at.elapsed() >= *every {
                signed_at = Instant::now();
                match proofs.sign(&signer.key, chrono::Utc::now()).await {
                    Ok(c) => {
                        tracing::debug!(tree_size = c.tree_size, "checkpoint signed");
                        if let Some(webhooks) = &webhooks {
                            publish(webhooks, &c).await;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "no checkpoint signed"),
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(TREE_EXTEND_MS)) => {}
            _ = stopped.changed() => return,
        }
        if *stopped.borrow() {
            return;
        }
    }
}

pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(public_key)).routes(routes!(latest))
}

/// Queues a checkpoint for the subscribers of `checkpoint.signed` (once per size and root).
async fn publish(webhooks: &orderlog_processes::webhooks::Webhooks, c: &Checkpoint) {
    use orderlog_processes::webhooks::integration;
    let data = serde_json::to_value(c).expect("checkpoints serialize");
    let key = format!("checkpoint\n{}\n{}", c.tree_size, c.root_hash);
    let at = chrono::DateTime::parse_from_rfc3339(&c.time).map_or_else(|_| chrono::Utc::now(), |t| t.to_utc());
    if let Err(e) = webhooks.publish(&integration::checkpoint(&data), &key, c.tree_size, at).await {
        tracing::warn!(error = %e, tree_size = c.tree_size, "the signed checkpoint could not be queued for subscribers");
    }
}

fn signer(api: &Shared) -> Result<&Signer, Problem> {
    api.checkpoints
        .as_deref()
        .ok_or_else(|| Problem::not_found("this server signs no checkpoints (start it with --checkpoint-key)"))
}

fn problem(e: ReplayError) -> Problem {
    match e {
        ReplayError::Invalid(detail) => Problem::new(axum::http::StatusCode::CONFLICT, detail),
        other => Problem::internal(other.to_string()),
    }
}

/// The key checkpoints are signed with.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicKey {
    /// Ed25519, 64 hex digits.
    pub public_key: String,
    /// The first 8 bytes of its SHA-256, hex, as checkpoints name it.
    pub key_id: String,
}

/// The public key of the server's checkpoints.
#[utoipa::path(get, path = "/checkpoints/key", tag = "proofs",
    responses((status = 200, body = PublicKey), (status = 404, description = "the server signs no checkpoints")),
    security(("bearer" = ["audit"])))]
async fn public_key(State(api): State<Shared>) -> Result<Json<PublicKey>, Problem> {
    let key = signer(&api)?.key.verifying_key();
    Ok(Json(PublicKey { public_key: hex::encode(key.as_bytes()), key_id: key_id(&key) }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CheckpointParams {
    /// An earlier checkpoint by its size, if one of that size was signed; the latest when
    /// absent.
    tree_size: Option<u64>,
}

/// The latest signed checkpoint of the log (signed now if the log has grown since the last
/// one), or an earlier one by its size.
#[utoipa::path(get, path = "/checkpoints/latest", tag = "proofs", params(CheckpointParams),
    responses((status = 200, body = Object), (status = 404, description = "no such checkpoint, or none signed"),
        (status = 409, description = "the log no longer extends the last checkpoint: none is signed")),
    security(("bearer" = ["audit"])))]
async fn latest(State(api): State<Shared>, Query(p): Query<CheckpointParams>) -> Result<Json<Checkpoint>, Problem> {
    let signer = signer(&api)?;
    if let Some(size) = p.tree_size {
        return api.proofs.kept(Some(size)).await.map_err(problem)?.map(Json).ok_or_else(|| {
            Problem::not_found(format!("no checkpoint of {size} events was signed; GET /checkpoints/latest"))
        });
    }
    let mut last = signer.last.lock().await;
    if last.is_none_or(|at| at.elapsed() >= Duration::from_millis(CHECKPOINT_INTERVAL_MS)) {
        *last = Some(Instant::now());
        return Ok(Json(api.proofs.sign(&signer.key, chrono::Utc::now()).await.map_err(problem)?));
    }
    api.proofs
        .kept(None)
        .await
        .map_err(problem)?
        .map(Json)
        .ok_or_else(|| Problem::not_found("no checkpoint signed yet"))
}
