//! Signed checkpoints of the log: the size and Merkle root (RFC 9162) of the log at a
//! moment, signed with Ed25519. Whoever keeps a checkpoint can later check that the log
//! still extends it: an insider who rewrites an event and recomputes every hash after it
//! (which `verify` alone cannot see) changes the root of the log's first `tree_size`
//! events, and a log cut short no longer has that many.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use orderlog_store::merkle::{Hash, Tree};
use orderlog_store::{EventStore, LogCursor, READ_EVENTS_MAX};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ReplayError;

/// How long a proof waits for the appends committed before it to become readable.
pub const SETTLE_MS_MAX: u64 = 5_000;

/// A signed statement of the log's size and root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Events in the log (leaves of the tree), in log order.
    pub tree_size: u64,
    /// The Merkle root of those events' hashes, hex.
    pub root_hash: String,
    /// When it was signed (RFC 3339).
    pub time: String,
    /// The first 8 bytes of the SHA-256 of the public key, hex.
    pub key_id: String,
    /// Ed25519 over [`Checkpoint::signed_text`], hex.
    pub signature: String,
}

impl Checkpoint {
    /// The text the signature covers: the fields, one per line, in this order.
    pub fn signed_text(tree_size: u64, root_hash: &str, time: &str, key_id: &str) -> String {
        format!("orderlog checkpoint v1\n{tree_size}\n{root_hash}\n{time}\n{key_id}\n")
    }

    /// Checks the signature with `key`.
    pub fn check_signature(&self, key: &VerifyingKey) -> Result<(), ReplayError> {
        if self.key_id != key_id(key) {
            return Err(ReplayError::Invalid(format!(
                "the checkpoint is signed by key {}, not by the trusted key {}",
                self.key_id,
                key_id(key)
            )));
        }
        let bytes: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| ReplayError::Invalid("the checkpoint's signature is not 64 bytes of hex".into()))?;
        let text = Checkpoint::signed_text(self.tree_size, &self.root_hash, &self.time, &self.key_id);
        key.verify(text.as_bytes(), &Signature::from_bytes(&bytes))
            .map_err(|_| ReplayError::Invalid("the checkpoint's signature does not hold: it was altered".into()))
    }
}

/// A key's id: the first 8 bytes of the SHA-256 of its public key, hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// A new signing key, written to `path` (hex; the file must not exist).
pub fn create_key(path: &Path) -> Result<VerifyingKey, ReplayError> {
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| ReplayError::Invalid(format!("cannot create the key file '{}': {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
    }
    std::io::Write::write_all(&mut file, format!("{}\n", hex::encode(key.to_bytes())).as_bytes())
        .map_err(|e| ReplayError::Invalid(format!("cannot write the key file '{}': {e}", path.display())))?;
    Ok(key.verifying_key())
}

/// The signing key in `path`.
pub fn read_key(path: &Path) -> Result<SigningKey, ReplayError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ReplayError::Invalid(format!("cannot read the key file '{}': {e}", path.display())))?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ReplayError::Invalid(format!("'{}' does not hold a key (64 hex digits)", path.display())))?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// A public key given as 64 hex digits.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, ReplayError> {
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ReplayError::Invalid("a public key is 64 hex digits".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| ReplayError::Invalid(format!("not an Ed25519 public key: {e}")))
}

/// The Merkle tree of the whole log, a leaf per event in log order (its hash as data).
pub async fn tree_of(store: &dyn EventStore) -> Result<Tree, ReplayError> {
    let follower = TreeFollower::default();
    drop(follower.caught_up(store).await?);
    Ok(follower.state.into_inner().tree)
}

/// An inclusion proof of one event, in the form `tools/merkle_verify.py` reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InclusionProof {
    pub kind: &'static str,
    pub position: u64,
    /// The event's leaf index (its rank in log order).
    pub index: u64,
    pub size: u64,
    /// The leaf hash: SHA-256 of 0x00 and the event's hash.
    pub leaf: String,
    pub proof: Vec<String>,
    pub root: String,
}

/// A consistency proof between two sizes of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConsistencyProof {
    pub kind: &'static str,
    pub old_size: u64,
    pub new_size: u64,
    pub old_root: String,
    pub new_root: String,
    pub proof: Vec<String>,
}

fn hexes(hashes: Vec<Hash>) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

/// The proof that the event at `position` is in the log of `size` events (the whole log
/// when `None`).
pub async fn prove_inclusion(
    store: &dyn EventStore,
    position: u64,
    size: Option<u64>,
) -> Result<InclusionProof, ReplayError> {
    TreeFollower::default().inclusion(store, position, size).await
}

/// The proof that the log of `new_size` events (the whole log when `None`) extends its
/// first `old_size` events.
pub async fn prove_consistency(
    store: &dyn EventStore,
    old_size: u64,
    new_size: Option<u64>,
) -> Result<ConsistencyProof, ReplayError> {
    TreeFollower::default().consistency(store, old_size, new_size).await
}

/// The Merkle tree of a growing log, kept in memory and caught up before each answer (only
/// the events after the last one folded are read), with each event's leaf index by
/// position. Memory: about 100 bytes per event.
#[derive(Default)]
pub struct TreeFollower {
    state: tokio::sync::Mutex<Followed>,
}

#[derive(Default)]
struct Followed {
    tree: Tree,
    cursor: LogCursor,
    index_of: std::collections::BTreeMap<u64, u64>,
}

impl TreeFollower {
    async fn caught_up<'a>(
        &'a self,
        store: &dyn EventStore,
    ) -> Result<tokio::sync::MutexGuard<'a, Followed>, ReplayError> {
        let mut state = self.state.lock().await;
        // Everything committed before the call is in the tree (PostgreSQL's log is read below
        // the oldest transaction still running); past the bound, the tree answers as it is.
        store.settle(std::time::Duration::from_millis(SETTLE_MS_MAX)).await?;
        loop {
            let batch = store.read_all(state.cursor, READ_EVENTS_MAX).await?;
            let Some(last) = batch.last() else { return Ok(state) };
            state.cursor = LogCursor::after(last);
            for event in &batch {
                let hash = hex::decode(&event.hash).map_err(|_| {
                    ReplayError::Invalid(format!("the event at position {} has a hash that is not hex", event.position))
                })?;
                let index = state.tree.size();
                state.index_of.insert(event.position, index);
                state.tree.push(&hash);
            }
        }
    }

    /// The log's size and Merkle root now.
    pub async fn head(&self, store: &dyn EventStore) -> Result<(u64, Hash), ReplayError> {
        let state = self.caught_up(store).await?;
        let size = state.tree.size();
        Ok((size, state.tree.root(size).map_err(|e| ReplayError::Invalid(e.to_string()))?))
    }

    /// The proof that the event at `position` is in the log of `size` events (the log as it
    /// is now when `None`).
    pub async fn inclusion(
        &self,
        store: &dyn EventStore,
        position: u64,
        size: Option<u64>,
    ) -> Result<InclusionProof, ReplayError> {
        let state = self.caught_up(store).await?;
        let index = *state
            .index_of
            .get(&position)
            .ok_or_else(|| ReplayError::NotFound(format!("no event at position {position}")))?;
        let size = size.unwrap_or(state.tree.size());
        if size > state.tree.size() {
            return Err(ReplayError::Invalid(format!("tree_size {size}: the log has {} events", state.tree.size())));
        }
        if index >= size {
            return Err(ReplayError::Invalid(format!(
                "the event at position {position} is leaf {index}, not among the first {size} events"
            )));
        }
        let invalid = |e: orderlog_store::merkle::ProofError| ReplayError::Invalid(e.to_string());
        let proof = state.tree.inclusion_proof(index, size).map_err(invalid)?;
        let leaf = state.tree.leaf(index).expect("a leaf of the tree");
        Ok(InclusionProof {
            kind: "inclusion",
            position,
            index,
            size,
            leaf: hex::encode(leaf),
            proof: hexes(proof),
            root: hex::encode(state.tree.root(size).map_err(invalid)?),
        })
    }

    /// The proof that the log of `new_size` events (as it is now when `None`) extends its
    /// first `old_size` events.
    pub async fn consistency(
        &self,
        store: &dyn EventStore,
        old_size: u64,
        new_size: Option<u64>,
    ) -> Result<ConsistencyProof, ReplayError> {
        let state = self.caught_up(store).await?;
        let new_size = new_size.unwrap_or(state.tree.size());
        if new_size > state.tree.size() || old_size > new_size {
            return Err(ReplayError::Invalid(format!(
                "from {old_size} to {new_size}: sizes run from 0 to the log's {} events, the first no larger",
                state.tree.size()
            )));
        }
        let invalid = |e: orderlog_store::merkle::ProofError| ReplayError::Invalid(e.to_string());
        let proof = state.tree.consistency_proof(old_size, new_size).map_err(invalid)?;
        Ok(ConsistencyProof {
            kind: "consistency",
            old_size,
            new_size,
            old_root: hex::encode(state.tree.root(old_size).map_err(invalid)?),
            new_root: hex::encode(state.tree.root(new_size).map_err(invalid)?),
            proof: hexes(proof),
        })
    }
}

/// Signs a checkpoint of a log of `size` events whose root is `root`.
pub fn sign_head(size: u64, root: &Hash, key: &SigningKey, now: DateTime<Utc>) -> Checkpoint {
    let root = hex::encode(root);
    let time = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let id = key_id(&key.verifying_key());
    let signature = key.sign(Checkpoint::signed_text(size, &root, &time, &id).as_bytes());
    Checkpoint { tree_size: size, root_hash: root, time, key_id: id, signature: hex::encode(signature.to_bytes()) }
}

/// Signs a checkpoint of the whole log as it is now.
pub async fn sign(store: &dyn EventStore, key: &SigningKey, now: DateTime<Utc>) -> Result<Checkpoint, ReplayError> {
    let tree = tree_of(store).await?;
    let size = tree.size();
    let root = hex::encode(root_of(&tree, size)?);
    let time = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let id = key_id(&key.verifying_key());
    let signature = key.sign(Checkpoint::signed_text(size, &root, &time, &id).as_bytes());
    Ok(Checkpoint { tree_size: size, root_hash: root, time, key_id: id, signature: hex::encode(signature.to_bytes()) })
}

fn root_of(tree: &Tree, size: u64) -> Result<Hash, ReplayError> {
    tree.root(size).map_err(|e| ReplayError::Invalid(e.to_string()))
}

/// What checking the log against a trusted checkpoint found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    /// Events in the log now.
    pub size: u64,
    /// Events the checkpoint covers.
    pub checkpoint_size: u64,
}

/// Checks that the log extends `checkpoint`, signed by `key`: the signature holds, the log
/// has at least its events, and its first `tree_size` events hash to its root.
pub async fn verify_against(
    store: &dyn EventStore,
    checkpoint: &Checkpoint,
    key: &VerifyingKey,
) -> Result<Extension, ReplayError> {
    checkpoint.check_signature(key)?;
    let tree = tree_of(store).await?;
    let size = tree.size();
    if size < checkpoint.tree_size {
        return Err(ReplayError::Invalid(format!(
            "the log has {size} events, fewer than the {} of the checkpoint signed at {}: events were removed",
            checkpoint.tree_size, checkpoint.time
        )));
    }
    let root = hex::encode(root_of(&tree, checkpoint.tree_size)?);
    if root != checkpoint.root_hash {
        return Err(ReplayError::Invalid(format!(
            "the log's first {} events do not hash to the root of the checkpoint signed at {}: history up to \
             there was rewritten (root now {root}, signed {})",
            checkpoint.tree_size, checkpoint.time, checkpoint.root_hash
        )));
    }
    Ok(Extension { size, checkpoint_size: checkpoint.tree_size })
}
