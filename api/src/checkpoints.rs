//! Signed checkpoints served by the API (scope `audit`): the server's public key, and the
//! latest checkpoint of the log — signed when asked if the log has grown since the last
//! one, at most once per `CHECKPOINT_INTERVAL_MS`. Signed checkpoints are kept in memory,
//! the last `CHECKPOINTS_KEPT_MAX` of them; an auditor keeps its own copies.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::Json;
use ed25519_dalek::SigningKey;
use orderlog_replay::checkpoint::{key_id, sign_head, Checkpoint};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::Problem;
use crate::Shared;

/// Least time between two checkpoints the server signs.
pub const CHECKPOINT_INTERVAL_MS: u64 = 1_000;
/// Signed checkpoints kept in memory, the latest ones.
pub const CHECKPOINTS_KEPT_MAX: usize = 10_000;

/// The server's signing key and the checkpoints it signed.
pub struct Signer {
    key: SigningKey,
    signed: tokio::sync::Mutex<(BTreeMap<u64, Checkpoint>, Option<Instant>)>,
}

impl Signer {
    pub fn new(key: SigningKey) -> Signer {
        Signer { key, signed: tokio::sync::Mutex::new((BTreeMap::new(), None)) }
    }
}

pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(public_key)).routes(routes!(latest))
}

fn signer(api: &Shared) -> Result<&Signer, Problem> {
    api.checkpoints
        .as_deref()
        .ok_or_else(|| Problem::not_found("this server signs no checkpoints (start it with --checkpoint-key)"))
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
    /// An earlier checkpoint by its size, if this server signed one of that size and still
    /// keeps it; the latest when absent.
    tree_size: Option<u64>,
}

/// The latest signed checkpoint of the log (signed now if the log has grown since the last
/// one), or an earlier one by its size.
#[utoipa::path(get, path = "/checkpoints/latest", tag = "proofs", params(CheckpointParams),
    responses((status = 200, body = Object), (status = 404, description = "no such checkpoint, or none signed")),
    security(("bearer" = ["audit"])))]
async fn latest(State(api): State<Shared>, Query(p): Query<CheckpointParams>) -> Result<Json<Checkpoint>, Problem> {
    let signer = signer(&api)?;
    let mut signed = signer.signed.lock().await;
    if let Some(size) = p.tree_size {
        return signed.0.get(&size).cloned().map(Json).ok_or_else(|| {
            Problem::not_found(format!("no checkpoint of {size} events is kept; GET /checkpoints/latest"))
        });
    }
    let due = signed.1.is_none_or(|at| at.elapsed() >= Duration::from_millis(CHECKPOINT_INTERVAL_MS));
    let last_size = signed.0.keys().next_back().copied();
    if due {
        let (size, root) = api.proofs.head(&*api.store).await.map_err(|e| Problem::internal(e.to_string()))?;
        if last_size.is_none_or(|last| size > last) {
            let checkpoint = sign_head(size, &root, &signer.key, chrono::Utc::now());
            signed.0.insert(size, checkpoint);
            signed.1 = Some(Instant::now());
            while signed.0.len() > CHECKPOINTS_KEPT_MAX {
                signed.0.pop_first();
            }
        }
    }
    signed.0.values().next_back().cloned().map(Json).ok_or_else(|| Problem::not_found("no checkpoint signed yet"))
}
