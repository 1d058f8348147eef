//! Merkle proofs over the log (scope `audit`), in the shape of RFC 9162: that an event is in
//! the log of a given size, and that the log of one size extends the log of a smaller one.
//! The tree is stored beside the log, which `orderlog serve` brings it up to every 200 ms
//! and a proof first when it needs to; the answers are what `orderlog prove` prints and
//! `tools/merkle_verify.py` checks.

use axum::extract::{Query, State};
use axum::Json;
use orderlog_replay::ReplayError;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::Problem;
use crate::Shared;

pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(inclusion)).routes(routes!(consistency))
}

fn problem(e: ReplayError) -> Problem {
    match e {
        ReplayError::NotFound(detail) => Problem::not_found(detail),
        ReplayError::Invalid(detail) => Problem::new(axum::http::StatusCode::CONFLICT, detail),
        other => Problem::internal(other.to_string()),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InclusionParams {
    /// The event's global position.
    position: u64,
    /// The size of the log the proof is for (events); when absent, the log as the server's
    /// Merkle tree has it (the tree follows the log within a moment, and is brought up to it
    /// first when it lacks the event).
    tree_size: Option<u64>,
}

/// The proof that the event at `position` is in the log of `tree_size` events: its leaf
/// index, leaf hash, the audit path and the root.
#[utoipa::path(get, path = "/proofs/inclusion", tag = "proofs", params(InclusionParams),
    responses((status = 200, body = Object), (status = 404, description = "no event at that position"),
        (status = 409, description = "the sizes do not fit the log")),
    security(("bearer" = ["audit"])))]
async fn inclusion(
    State(api): State<Shared>,
    Query(p): Query<InclusionParams>,
) -> Result<Json<orderlog_replay::checkpoint::InclusionProof>, Problem> {
    Ok(Json(api.proofs.inclusion(p.position, p.tree_size).await.map_err(problem)?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyParams {
    /// The smaller size (events).
    from: u64,
    /// The larger size; the log as it is now when absent.
    to: Option<u64>,
}

/// The proof that the log of `to` events extends its first `from` events, with both roots.
#[utoipa::path(get, path = "/proofs/consistency", tag = "proofs", params(ConsistencyParams),
    responses((status = 200, body = Object), (status = 409, description = "the sizes do not fit the log")),
    security(("bearer" = ["audit"])))]
async fn consistency(
    State(api): State<Shared>,
    Query(p): Query<ConsistencyParams>,
) -> Result<Json<orderlog_replay::checkpoint::ConsistencyProof>, Problem> {
    Ok(Json(api.proofs.consistency(p.from, p.to).await.map_err(problem)?))
}
