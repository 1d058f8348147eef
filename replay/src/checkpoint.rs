//! Signed checkpoints of the log: the size and Merkle root (RFC 9162) of the log at a
//! moment, signed with Ed25519. Whoever keeps a checkpoint can later check that the log
//! still extends it: an insider who rewrites an event and recomputes every hash after it
//! (which `verify` alone cannot see) changes the root of the log's first `tree_size`
//! events, and a log cut short no longer has that many.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use orderlog_store::merkle::{leaf_hash, node_hash, perfect, Frontier, Hash, NodeKey, Tree, STORED_LEVEL_MIN};
use orderlog_store::{EventStore, LogCursor, RecordedEvent, TreeLeaf, TreeStore, READ_EVENTS_MAX};
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

/// The Merkle tree of the whole log recomputed from its events, a leaf per event in log
/// order (its hash as data), with each leaf's position.
pub async fn tree_of(store: &dyn EventStore) -> Result<(Tree, Vec<u64>), ReplayError> {
    let (mut tree, mut positions, mut cursor) = (Tree::new(), Vec::new(), LogCursor::START);
    loop {
        let batch = store.read_all(cursor, READ_EVENTS_MAX).await?;
        let Some(last) = batch.last() else { return Ok((tree, positions)) };
        cursor = LogCursor::after(last);
        for event in &batch {
            tree.push(&event_hash(event)?);
            positions.push(event.position);
        }
    }
}

fn event_hash(event: &RecordedEvent) -> Result<Vec<u8>, ReplayError> {
    hex::decode(&event.hash).map_err(|_| {
        ReplayError::Invalid(format!("the event at position {} has a hash that is not hex", event.position))
    })
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
    store: Arc<dyn TreeStore>,
    position: u64,
    size: Option<u64>,
) -> Result<InclusionProof, ReplayError> {
    let tree = TreeFollower::new(store);
    tree.extend().await?;
    tree.inclusion(position, size).await
}

/// The proof that the log of `new_size` events (the whole log when `None`) extends its
/// first `old_size` events.
pub async fn prove_consistency(
    store: Arc<dyn TreeStore>,
    old_size: u64,
    new_size: Option<u64>,
) -> Result<ConsistencyProof, ReplayError> {
    TreeFollower::new(store).consistency(old_size, new_size).await
}

/// The stored Merkle tree of a log, brought up to the log (the events after its last leaf
/// are read and added, with the nodes they complete, a batch per transaction) before a
/// root, a signature or a consistency proof, and before an inclusion proof of an event it
/// lacks; every root and proof is read from O(log n) stored nodes, in one query.
pub struct TreeFollower {
    store: Arc<dyn TreeStore>,
    /// The tree's size when this follower last looked: the tree grows, so a proof at this
    /// size needs no read of the tree's size first.
    known: AtomicU64,
    /// One extension at a time in this process; other processes are kept out by the store.
    extending: tokio::sync::Mutex<()>,
}

fn proof_error(e: orderlog_store::merkle::ProofError) -> ReplayError {
    ReplayError::Invalid(e.to_string())
}

impl TreeFollower {
    pub fn new(store: Arc<dyn TreeStore>) -> TreeFollower {
        TreeFollower { store, known: AtomicU64::new(0), extending: tokio::sync::Mutex::new(()) }
    }

    /// The store the tree is kept in.
    pub fn store(&self) -> &Arc<dyn TreeStore> {
        &self.store
    }

    /// Records the size the tree was just found to have, and returns it.
    fn seen(&self, size: u64) -> u64 {
        self.known.store(size, Ordering::Relaxed);
        size
    }

    /// Adds the events appended since the tree's last leaf; returns the tree's size.
    pub async fn extend(&self) -> Result<u64, ReplayError> {
        let size = self.extend_tree().await?;
        Ok(self.seen(size))
    }

    async fn extend_tree(&self) -> Result<u64, ReplayError> {
        let _one = self.extending.lock().await;
        // Everything committed before the call goes in (PostgreSQL's log is read below the
        // oldest transaction still running); past the bound, the tree answers as it is.
        self.store.settle(std::time::Duration::from_millis(SETTLE_MS_MAX)).await?;
        'again: loop {
            let (size, mut cursor) = self.store.tree_size().await?;
            let peaks = self.nodes(&perfect::peaks(size)).await?;
            let mut frontier = Frontier::new(size, &peaks);
            loop {
                let batch = self.store.tree_pending(cursor, READ_EVENTS_MAX).await?;
                let Some(&(last, _)) = batch.last() else { return Ok(frontier.size()) };
                let from = frontier.size();
                let (mut leaves, mut nodes) = (Vec::with_capacity(batch.len()), Vec::with_capacity(batch.len()));
                for (at, hash) in &batch {
                    let hash = hex::decode(hash).map_err(|_| {
                        ReplayError::Invalid(format!(
                            "the event at position {} has a hash that is not hex",
                            at.position
                        ))
                    })?;
                    let leaf = leaf_hash(&hash);
                    leaves.push(TreeLeaf { index: frontier.size(), cursor: *at, hash: leaf });
                    let made = frontier.push(leaf).into_iter();
                    nodes.extend(made.filter(|(key, _)| key.level >= STORED_LEVEL_MIN));
                }
                if !self.store.tree_extend(from, leaves, nodes).await? {
                    // Another process extended it first: go on from what it stored.
                    continue 'again;
                }
                cursor = last;
            }
        }
    }

    /// The stored hashes of `keys`, every one of which the tree must have.
    async fn nodes(&self, keys: &[NodeKey]) -> Result<Vec<Hash>, ReplayError> {
        let found = stored_nodes(&*self.store, keys).await?;
        keys.iter()
            .zip(found)
            .map(|(key, hash)| {
                hash.ok_or_else(|| {
                    ReplayError::Invalid(format!(
                        "the stored Merkle tree lacks node {} of level {}: its tables were altered",
                        key.index, key.level
                    ))
                })
            })
            .collect()
    }

    /// Runs `work` over the stored nodes it reads, fetched in one query.
    async fn over_stored<T>(&self, work: impl Fn(&dyn Fn(NodeKey) -> Hash) -> T) -> Result<T, ReplayError> {
        let keys = perfect::keys_read(&work);
        let hashes = self.nodes(&keys).await?;
        let stored: std::collections::HashMap<NodeKey, Hash> = keys.into_iter().zip(hashes).collect();
        Ok(work(&|key| stored[&key]))
    }

    /// Runs `work` over the stored rows `found`, which must hold every node it reads.
    fn over_found<T>(
        found: &std::collections::HashMap<NodeKey, Hash>,
        work: impl Fn(&dyn Fn(NodeKey) -> Hash) -> T,
    ) -> Result<T, ReplayError> {
        let keys = perfect::keys_read(&work);
        let mut stored = std::collections::HashMap::new();
        for key in keys {
            let hash = from_rows(found, key).ok_or_else(|| {
                ReplayError::Invalid(format!(
                    "the stored Merkle tree lacks node {} of level {}: its tables were altered",
                    key.index, key.level
                ))
            })?;
            stored.insert(key, hash);
        }
        Ok(work(&|key| stored[&key]))
    }

    /// The log's size and Merkle root now.
    pub async fn head(&self) -> Result<(u64, Hash), ReplayError> {
        let size = self.extend().await?;
        Ok((size, self.over_stored(|node| perfect::root(node, size)).await?))
    }

    /// The proof that the event at `position` is in the log of `size` events (the log as the
    /// tree has it when `None`).
    pub async fn inclusion(&self, position: u64, size: Option<u64>) -> Result<InclusionProof, ReplayError> {
        // An event the tree has is proven at the tree's size as last seen (or a size it has)
        // without catching up first, in one read of the leaf and its proof's rows: a server
        // keeps the tree at most a moment behind the log. Otherwise the tree's size is read
        // again, and the tree is brought up to the log when it lacks the event or the size
        // asked for.
        let known = self.known.load(Ordering::Relaxed);
        let wanted = size.unwrap_or(known);
        if wanted > 0 && wanted <= known {
            if let Some((leaf, rows)) = self.store.tree_proof_rows(position, wanted).await? {
                if leaf.index < wanted {
                    return Self::over_found(&rows, |node| inclusion_of(position, &leaf, wanted, node));
                }
            }
        }
        let mut leaf = self.store.tree_leaf_at(position).await?;
        let mut now = self.known.load(Ordering::Relaxed);
        if leaf.is_some_and(|l| l.index >= now) || size.is_some_and(|s| s > now) {
            now = self.seen(self.store.tree_size().await?.0);
        }
        if leaf.is_none() || size.is_some_and(|s| s > now) {
            now = self.extend().await?;
            leaf = self.store.tree_leaf_at(position).await?;
        }
        let leaf = leaf.ok_or_else(|| ReplayError::NotFound(format!("no event at position {position}")))?;
        let size = size.unwrap_or(now);
        if size > now {
            return Err(ReplayError::Invalid(format!("tree_size {size}: the log has {now} events")));
        }
        let index = leaf.index;
        if index >= size {
            return Err(ReplayError::Invalid(format!(
                "the event at position {position} is leaf {index}, not among the first {size} events"
            )));
        }
        self.over_stored(|node| inclusion_of(position, &leaf, size, node)).await
    }

    /// The proof that the log of `new_size` events (as it is now when `None`) extends its
    /// first `old_size` events.
    pub async fn consistency(&self, old_size: u64, new_size: Option<u64>) -> Result<ConsistencyProof, ReplayError> {
        let now = self.extend().await?;
        let new_size = new_size.unwrap_or(now);
        if new_size > now || old_size > new_size {
            return Err(ReplayError::Invalid(format!(
                "from {old_size} to {new_size}: sizes run from 0 to the log's {now} events, the first no larger"
            )));
        }
        let (proof, old_root, new_root) = self
            .over_stored(|node| {
                (
                    perfect::consistency_proof(node, old_size, new_size),
                    perfect::root(node, old_size),
                    perfect::root(node, new_size),
                )
            })
            .await?;
        Ok(ConsistencyProof {
            kind: "consistency",
            old_size,
            new_size,
            old_root: hex::encode(old_root),
            new_root: hex::encode(new_root),
            proof: hexes(proof),
        })
    }

    /// Signs a checkpoint of the log as it is now and keeps it (the one kept of this size,
    /// if there is one: the log has not grown). Refuses to sign a tree that does not extend
    /// the latest kept checkpoint: a history rewritten under the tree is not signed over.
    pub async fn sign(&self, key: &SigningKey, now: DateTime<Utc>) -> Result<Checkpoint, ReplayError> {
        let (size, root) = self.head().await?;
        self.sign_held(size, &root, size, key, now).await
    }

    /// Signs a checkpoint of the log's first `size` events, whose root the caller computed
    /// from the events themselves as `root`, and keeps it. Refused unless the stored tree
    /// has that root for them (the events are the ones it was built from) and extends the
    /// latest kept checkpoint (its signature is not checked here: whoever relies on it does).
    pub async fn sign_prefix(
        &self,
        size: u64,
        root: &Hash,
        key: &SigningKey,
        now: DateTime<Utc>,
    ) -> Result<Checkpoint, ReplayError> {
        let tree_size = self.extend().await?;
        if size > tree_size {
            return Err(ReplayError::Invalid(format!("a checkpoint of {size} events: the log has {tree_size}")));
        }
        let held = self.over_stored(|node| perfect::root(node, size)).await?;
        if &held != root {
            return Err(ReplayError::Invalid(format!(
                "the log's first {size} events do not give the root its Merkle tree holds for them: events were \
                 altered after they were added (run `orderlog verify --against` with a checkpoint to see where)"
            )));
        }
        self.sign_held(size, root, tree_size, key, now).await
    }

    /// Signs and keeps a checkpoint of `size` events whose root the stored tree of
    /// `tree_size` leaves holds, unless that tree does not extend the latest kept checkpoint
    /// or one of this size was kept with another root; the one kept of this size, if any.
    async fn sign_held(
        &self,
        size: u64,
        root: &Hash,
        tree_size: u64,
        key: &SigningKey,
        now: DateTime<Utc>,
    ) -> Result<Checkpoint, ReplayError> {
        if let Some(last) = self.kept(None).await? {
            let then = match last.tree_size <= tree_size {
                true => Some(hex::encode(self.over_stored(|node| perfect::root(node, last.tree_size)).await?)),
                false => None,
            };
            if then.as_deref() != Some(last.root_hash.as_str()) {
                return Err(ReplayError::Invalid(format!(
                    "the log of {tree_size} events does not extend the checkpoint of {} events signed at {}: not \
                     signing (run `orderlog verify --against` with that checkpoint to see where it differs)",
                    last.tree_size, last.time
                )));
            }
        }
        if let Some(kept) = self.kept(Some(size)).await? {
            if kept.root_hash != hex::encode(root) {
                return Err(ReplayError::Invalid(format!(
                    "the checkpoint of {size} events signed at {} has another root than the log's: not signing \
                     (run `orderlog verify --against` with it to see where the log differs)",
                    kept.time
                )));
            }
            return Ok(kept);
        }
        let checkpoint = sign_head(size, root, key, now);
        let json = serde_json::to_string(&checkpoint).expect("a checkpoint serializes");
        self.store.keep_checkpoint(size, json).await?;
        Ok(checkpoint)
    }

    /// A kept checkpoint by its size, or the latest.
    pub async fn kept(&self, size: Option<u64>) -> Result<Option<Checkpoint>, ReplayError> {
        match self.store.kept_checkpoint(size).await? {
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| ReplayError::Invalid(format!("a kept checkpoint cannot be read: {e}"))),
            None => Ok(None),
        }
    }
}

/// The stored hashes of `keys`, in one query: leaves and inner nodes as stored, and a
/// subtree below [`STORED_LEVEL_MIN`] hashed again from its leaves; `None` where the tree
/// lacks one.
async fn stored_nodes(store: &dyn TreeStore, keys: &[NodeKey]) -> Result<Vec<Option<Hash>>, ReplayError> {
    let read: Vec<NodeKey> = keys.iter().flat_map(|key| rows_of(*key)).collect();
    let found = store.tree_nodes(read.clone()).await?;
    let found: std::collections::HashMap<NodeKey, Hash> =
        read.into_iter().zip(found).filter_map(|(key, hash)| Some((key, hash?))).collect();
    Ok(keys.iter().map(|key| from_rows(&found, *key)).collect())
}

/// The inclusion proof of `leaf` (the event at `position`) in the tree of `size` leaves,
/// read through `node`.
fn inclusion_of(position: u64, leaf: &TreeLeaf, size: u64, node: &dyn Fn(NodeKey) -> Hash) -> InclusionProof {
    InclusionProof {
        kind: "inclusion",
        position,
        index: leaf.index,
        size,
        leaf: hex::encode(leaf.hash),
        proof: hexes(perfect::inclusion_proof(node, leaf.index, size)),
        root: hex::encode(perfect::root(node, size)),
    }
}

/// The stored rows a node is read from: itself, or its leaves below the stored level.
fn rows_of(key: NodeKey) -> Vec<NodeKey> {
    match key.level > 0 && key.level < STORED_LEVEL_MIN {
        true => (0..1u64 << key.level).map(|i| NodeKey::new(0, (key.index << key.level) + i)).collect(),
        false => vec![key],
    }
}

/// A node's hash from the stored rows found (`rows_of` it), if they are all there.
fn from_rows(found: &std::collections::HashMap<NodeKey, Hash>, key: NodeKey) -> Option<Hash> {
    match rows_of(key).as_slice() {
        [one] if *one == key => found.get(&key).copied(),
        leaves => {
            let leaves: Option<Vec<Hash>> = leaves.iter().map(|leaf| found.get(leaf).copied()).collect();
            leaves.map(|leaves| orderlog_store::merkle::root(&leaves))
        }
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

/// What checking the log against a trusted checkpoint found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    /// Events in the log now.
    pub size: u64,
    /// Events the checkpoint covers.
    pub checkpoint_size: u64,
}

/// Checks that the log extends `checkpoint`, signed by `key`: the signature holds, the log
/// has at least its events, and its first `tree_size` events, hashed again from the log,
/// give its root. When they do not, the stored tree names the first event that differs
/// (see [`first_difference`]).
pub async fn verify_against(
    store: &dyn TreeStore,
    checkpoint: &Checkpoint,
    key: &VerifyingKey,
) -> Result<Extension, ReplayError> {
    checkpoint.check_signature(key)?;
    let signed: Hash = hex::decode(&checkpoint.root_hash)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ReplayError::Invalid("the checkpoint's root_hash is not 32 bytes of hex".into()))?;
    let (tree, positions) = tree_of(store).await?;
    let size = tree.size();
    let n = checkpoint.tree_size;
    let root = if size >= n { Some(tree.root(n).map_err(proof_error)?) } else { None };
    if root == Some(signed) {
        return Ok(Extension { size, checkpoint_size: n });
    }
    let at = match first_difference(store, &tree, n, &signed).await? {
        Difference::Leaf { index, position } => {
            let today = match positions.get(index as usize) {
                Some(p) if *p == position => "the event there now has other bytes".to_string(),
                Some(p) => format!("the log now has position {p} there"),
                None => "the log now ends before it".to_string(),
            };
            format!(
                "; the first event that differs is leaf {index}, at position {position} when it was signed ({today})"
            )
        }
        Difference::Unknown(why) => format!("; where it first differs cannot be said: {why}"),
    };
    let signed_at = &checkpoint.time;
    Err(ReplayError::Invalid(if size < n {
        format!("the log has {size} events, fewer than the {n} of the checkpoint signed at {signed_at}: events were removed{at}")
    } else {
        format!(
            "the log's first {n} events do not hash to the root of the checkpoint signed at {signed_at}: history up to \
             there was rewritten (root now {}, signed {}){at}",
            hex::encode(root.expect("the log is long enough")),
            checkpoint.root_hash
        )
    }))
}

/// Where a log first differs from a signed root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    /// Leaf `index` (at `position` when the root was signed) is the first that differs.
    Leaf { index: u64, position: u64 },
    /// The stored tree cannot say, and why.
    Unknown(String),
}

/// The first leaf where `now` (the tree recomputed from the log) differs from the tree of
/// `size` leaves whose root was signed as `signed`, found by descending the stored tree.
/// The stored nodes are trusted only as far as they hash up to the signed root: the peaks
/// of `size` must give it, and each pair of children its parent, so an insider who also
/// rewrote the tree's tables is caught there, and then the place cannot be named.
pub async fn first_difference(
    store: &dyn TreeStore,
    now: &Tree,
    size: u64,
    signed: &Hash,
) -> Result<Difference, ReplayError> {
    let peaks = perfect::peaks(size);
    let stored = stored_nodes(store, &peaks).await?;
    let Some(stored) = stored.into_iter().collect::<Option<Vec<Hash>>>() else {
        return Ok(Difference::Unknown(format!("the stored Merkle tree does not reach {size} events")));
    };
    let by_key: std::collections::HashMap<NodeKey, Hash> = peaks.iter().copied().zip(stored.iter().copied()).collect();
    if &perfect::root(&|key| by_key[&key], size) != signed {
        return Ok(Difference::Unknown(
            "the stored Merkle tree does not give the signed root either: its tables were rewritten too".into(),
        ));
    }
    let Some((mut key, mut hash)) = peaks.into_iter().zip(stored).find(|(key, hash)| now.node(*key) != Some(*hash))
    else {
        return Ok(Difference::Unknown("every part of the stored tree matches the log".into()));
    };
    while key.level > 0 {
        let (left, right) =
            (NodeKey::new(key.level - 1, key.index * 2), NodeKey::new(key.level - 1, key.index * 2 + 1));
        let children = stored_nodes(store, &[left, right]).await?;
        let (Some(l), Some(r)) = (children[0], children[1]) else {
            return Ok(Difference::Unknown(format!("the stored Merkle tree lacks the children of {key:?}")));
        };
        if node_hash(&l, &r) != hash {
            return Ok(Difference::Unknown(format!(
                "the stored Merkle tree's nodes under {key:?} do not hash to it: its tables were altered"
            )));
        }
        (key, hash) = if now.node(left) != Some(l) { (left, l) } else { (right, r) };
    }
    match store.tree_leaf(key.index).await? {
        Some(leaf) if leaf.hash == hash => Ok(Difference::Leaf { index: key.index, position: leaf.cursor.position }),
        _ => Ok(Difference::Unknown(format!("the stored Merkle tree's leaf {} was altered", key.index))),
    }
}
