//! A Merkle tree over the global log in the shape of RFC 9162 (Certificate Transparency
//! 2.0), section 2.1: a leaf is `SHA-256(0x00 ‖ data)`, an inner node
//! `SHA-256(0x01 ‖ left ‖ right)`, and a tree of `n` leaves splits at the largest power of
//! two below `n`. A leaf's data is an event's hash, so the tree commits to every event and,
//! through the hash chains, to every stream. Inclusion proofs show that an event is in a
//! tree of a given size; consistency proofs that a larger tree extends a smaller one, which
//! is what a holder of an earlier signed root needs to catch a rewritten history.
//!
//! Proofs are made from the leaf hashes by the RFC's recursive definitions and checked by
//! its iterative verification algorithms (2.1.3.2 and 2.1.4.2), a separate path on
//! purpose; `tools/merkle_verify.py` checks the same proofs independently.

use sha2::{Digest, Sha256};

/// A node's or leaf's hash.
pub type Hash = [u8; 32];

/// Why a proof does not hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    #[error("leaf {index} is not in a tree of {size} leaves")]
    OutOfRange { index: u64, size: u64 },
    #[error("a tree of {old} leaves cannot be extended by one of {new}")]
    Shrunk { old: u64, new: u64 },
    #[error("the proof has {found} hashes, not the {expected} this position and size take")]
    Length { found: usize, expected: usize },
    #[error("the proof does not lead to the root")]
    RootMismatch,
}

/// The hash of a leaf whose data is `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an inner node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two smaller than `n` (for `n` ≥ 2).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The root of the tree whose leaves hash to `leaves` (MTH); the hash of nothing for none.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion proof of leaf `index` in the tree of `leaves` (PATH), leaf first.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Result<Vec<Hash>, ProofError> {
    if index >= leaves.len() {
        return Err(ProofError::OutOfRange { index: index as u64, size: leaves.len() as u64 });
    }
    fn path(leaves: &[Hash], m: usize, out: &mut Vec<Hash>) {
        if leaves.len() <= 1 {
            return;
        }
        let k = split(leaves.len());
        if m < k {
            path(&leaves[..k], m, out);
            out.push(root(&leaves[k..]));
        } else {
            path(&leaves[k..], m - k, out);
            out.push(root(&leaves[..k]));
        }
    }
    let mut out = Vec::new();
    path(leaves, index, &mut out);
    Ok(out)
}

/// The proof that the tree of `leaves` extends the tree of its first `old_size` leaves
/// (PROOF); empty when the sizes are equal or the old tree is empty.
pub fn consistency_proof(leaves: &[Hash], old_size: usize) -> Result<Vec<Hash>, ProofError> {
    if old_size > leaves.len() {
        return Err(ProofError::Shrunk { old: old_size as u64, new: leaves.len() as u64 });
    }
    fn subproof(leaves: &[Hash], m: usize, complete: bool, out: &mut Vec<Hash>) {
        let n = leaves.len();
        if m == n {
            if !complete {
                out.push(root(leaves));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            subproof(&leaves[..k], m, complete, out);
            out.push(root(&leaves[k..]));
        } else {
            subproof(&leaves[k..], m - k, false, out);
            out.push(root(&leaves[..k]));
        }
    }
    let mut out = Vec::new();
    if old_size > 0 {
        subproof(leaves, old_size, true, &mut out);
    }
    Ok(out)
}

/// Checks that `leaf` (a leaf hash) is leaf `index` of the tree of `size` leaves whose root
/// is `root`, by the algorithm of RFC 9162, 2.1.3.2.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::Length { found: proof.len(), expected: proof_length(index, size) });
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::Length { found: proof.len(), expected: proof_length(index, size) });
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// How many hashes the inclusion proof of `index` in a tree of `size` has.
fn proof_length(index: u64, size: u64) -> usize {
    let (mut f, mut s, mut n) = (index, size - 1, 0);
    while s != 0 {
        if f & 1 == 1 || f == s {
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        }
        f >>= 1;
        s >>= 1;
        n += 1;
    }
    n
}

/// Checks that the tree of `new_size` leaves with root `new_root` extends the tree of
/// `old_size` leaves with root `old_root`, by the algorithm of RFC 9162, 2.1.4.2.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::Shrunk { old: old_size, new: new_size });
    }
    if old_size == new_size {
        return match (proof.is_empty(), old_root == new_root) {
            (true, true) => Ok(()),
            (false, _) => Err(ProofError::Length { found: proof.len(), expected: 0 }),
            (true, false) => Err(ProofError::RootMismatch),
        };
    }
    if old_size == 0 {
        // Every tree extends the empty one.
        return match proof.is_empty() {
            true => Ok(()),
            false => Err(ProofError::Length { found: proof.len(), expected: 0 }),
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::Length { found: 0, expected: 1 });
    };
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return Err(ProofError::Length { found: proof.len(), expected: proof.len() - 1 });
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 || &fr != old_root || &sr != new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The lowest level of inner nodes a stored tree keeps: a subtree below it (at most 8
/// leaves) is hashed again from its leaves when a proof needs it, so a stored tree holds
/// about one row per event and 1/16 more, not two.
pub const STORED_LEVEL_MIN: u8 = 4;

/// The stored rows (leaves, and nodes from [`STORED_LEVEL_MIN`] up) from which the
/// inclusion proof of leaf `index` in the tree of `size` leaves and that tree's root are
/// made: the leaves of `index`'s block of 16 and of the last, partial block; the sibling
/// of `index`'s subtree at each stored level while it lies wholly in the tree; and the
/// tree's peaks from the stored level up. It is a few more rows than a proof reads, but it
/// follows from `index` and `size` by bit arithmetic alone, so a database can find the leaf
/// and these rows in one query (the PostgreSQL store writes the same rule in SQL).
pub fn proof_rows(index: u64, size: u64) -> Vec<NodeKey> {
    let block = 1u64 << STORED_LEVEL_MIN;
    let mut keys = std::collections::BTreeSet::new();
    let first = index / block * block;
    keys.extend((first..(first + block).min(size)).map(|i| NodeKey::new(0, i)));
    keys.extend((size / block * block..size).map(|i| NodeKey::new(0, i)));
    for level in STORED_LEVEL_MIN..63 {
        let sibling = (index >> level) ^ 1;
        if sibling < size >> level {
            keys.insert(NodeKey::new(level, sibling));
        }
        if (size >> level) & 1 == 1 {
            keys.insert(NodeKey::new(level, (size >> (level + 1)) << 1));
        }
    }
    keys.into_iter().collect()
}

/// A perfect subtree: the `2^level` leaves from `index·2^level` (level 0: a leaf).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey {
    pub level: u8,
    pub index: u64,
}

impl NodeKey {
    pub fn new(level: u8, index: u64) -> NodeKey {
        NodeKey { level, index }
    }
}

/// Roots and proofs of a tree kept as the hashes of its perfect subtrees, read through
/// `node`. Any root or proof reads O(log n) of them: the siblings left of a path are
/// perfect subtrees, and the ones right of it split into at most one perfect subtree per
/// level. [`keys_read`] names them, so that a stored tree is read in one query.
pub mod perfect {
    use super::*;

    /// The perfect subtrees whose hashes `work` reads.
    pub fn keys_read<T>(work: impl FnOnce(&dyn Fn(NodeKey) -> Hash) -> T) -> Vec<NodeKey> {
        let seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
        work(&|key| {
            seen.borrow_mut().insert(key);
            [0; 32]
        });
        seen.into_inner().into_iter().collect()
    }

    /// MTH of the leaves `start..end`, where `start` is where the RFC's recursion puts it.
    pub fn range(node: &dyn Fn(NodeKey) -> Hash, start: u64, end: u64) -> Hash {
        let n = end - start;
        if n == 0 {
            return Sha256::digest([]).into();
        }
        if n.is_power_of_two() && start.is_multiple_of(n) {
            return node(NodeKey::new(n.trailing_zeros() as u8, start / n));
        }
        let k = split(n as usize) as u64;
        node_hash(&range(node, start, start + k), &range(node, start + k, end))
    }

    /// The root of the tree of the first `size` leaves.
    pub fn root(node: &dyn Fn(NodeKey) -> Hash, size: u64) -> Hash {
        range(node, 0, size)
    }

    /// The perfect subtrees a tree of `size` leaves splits into, left to right (one per set
    /// bit of `size`): the RFC's root is folded from them right to left.
    pub fn peaks(size: u64) -> Vec<NodeKey> {
        let mut out = Vec::new();
        let mut start = 0;
        for level in (0..64u8).rev() {
            if size & (1 << level) != 0 {
                out.push(NodeKey::new(level, start >> level));
                start += 1 << level;
            }
        }
        out
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves
    /// (`index` < `size`).
    pub fn inclusion_proof(node: &dyn Fn(NodeKey) -> Hash, index: u64, size: u64) -> Vec<Hash> {
        let mut out = Vec::new();
        let (mut start, mut end, mut m) = (0u64, size, index);
        while end - start > 1 {
            let k = split((end - start) as usize) as u64;
            if m < k {
                out.push(range(node, start + k, end));
                end = start + k;
            } else {
                out.push(range(node, start, start + k));
                start += k;
                m -= k;
            }
        }
        out.reverse();
        out
    }

    /// The proof that the tree of the first `new_size` leaves extends that of the first
    /// `old_size` (`old_size` ≤ `new_size`).
    pub fn consistency_proof(node: &dyn Fn(NodeKey) -> Hash, old_size: u64, new_size: u64) -> Vec<Hash> {
        let mut out = Vec::new();
        if old_size == 0 || old_size == new_size {
            return out;
        }
        let (mut start, mut end, mut m, mut complete) = (0u64, new_size, old_size, true);
        loop {
            let n = end - start;
            if m == n {
                if !complete {
                    out.push(range(node, start, end));
                }
                break;
            }
            let k = split(n as usize) as u64;
            if m <= k {
                out.push(range(node, start + k, end));
                end = start + k;
            } else {
                out.push(range(node, start, start + k));
                start += k;
                m -= k;
                complete = false;
            }
        }
        out.reverse();
        out
    }
}

/// The right edge of a growing tree: the last unpaired perfect subtree of each level, all a
/// new leaf needs. A stored tree is extended from its frontier ([`perfect::peaks`] of its
/// size) without reading the rest.
#[derive(Clone, Debug)]
pub struct Frontier {
    size: u64,
    /// By level: the hash of the unpaired subtree there, if any.
    open: Vec<Option<Hash>>,
}

impl Frontier {
    /// The frontier of a tree of `size` leaves whose peaks hash to `peaks` (left to right).
    pub fn new(size: u64, peaks: &[Hash]) -> Frontier {
        let keys = perfect::peaks(size);
        assert_eq!(keys.len(), peaks.len(), "one hash per peak");
        let mut open = vec![None; 64];
        for (key, hash) in keys.iter().zip(peaks) {
            open[key.level as usize] = Some(*hash);
        }
        Frontier { size, open }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the tree so far (RFC 9162's MTH): its peaks folded right to left.
    pub fn root(&self) -> Hash {
        let mut peaks = self.open.iter().flatten();
        let Some(lowest) = peaks.next() else { return Sha256::digest([]).into() };
        peaks.fold(*lowest, |right, left| node_hash(left, &right))
    }

    /// Adds a leaf, keeping only the right edge.
    pub fn add(&mut self, leaf: Hash) {
        self.size += 1;
        let (mut hash, mut level) = (leaf, 0);
        while let Some(left) = self.open[level].take() {
            hash = node_hash(&left, &hash);
            level += 1;
        }
        self.open[level] = Some(hash);
    }

    /// Adds a leaf; returns it and every perfect subtree it completes, each with its hash.
    pub fn push(&mut self, leaf: Hash) -> Vec<(NodeKey, Hash)> {
        let index = self.size;
        self.size += 1;
        let mut made = vec![(NodeKey::new(0, index), leaf)];
        let mut hash = leaf;
        let mut level = 0usize;
        while let Some(left) = self.open[level].take() {
            hash = node_hash(&left, &hash);
            level += 1;
            made.push((NodeKey::new(level as u8, index >> level), hash));
        }
        self.open[level] = Some(hash);
        made
    }
}

/// The tree over a growing log, kept in memory as the hashes of its perfect subtrees, so a
/// leaf is added in O(log n) and any root or proof reads O(log n) of them.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    /// The hash of leaf `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.node(NodeKey::new(0, index))
    }

    /// The hash of a perfect subtree, if the tree has all its leaves.
    pub fn node(&self, key: NodeKey) -> Option<Hash> {
        self.levels.get(key.level as usize)?.get(key.index as usize).copied()
    }

    fn at(&self) -> impl Fn(NodeKey) -> Hash + '_ {
        |key| self.levels[key.level as usize][key.index as usize]
    }

    /// Leaves in the tree.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Adds a leaf whose data is `data`.
    pub fn push(&mut self, data: &[u8]) {
        self.push_leaf(leaf_hash(data));
    }

    /// Adds a leaf by its hash, and every perfect subtree it completes.
    pub fn push_leaf(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(hash);
            let len = self.levels[level].len();
            if len % 2 == 1 {
                return;
            }
            hash = node_hash(&self.levels[level][len - 2], &self.levels[level][len - 1]);
            level += 1;
        }
    }

    /// The root of the tree of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        if size > self.size() {
            return Err(ProofError::OutOfRange { index: size, size: self.size() });
        }
        Ok(perfect::root(&self.at(), size))
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if index >= size || size > self.size() {
            return Err(ProofError::OutOfRange { index, size });
        }
        Ok(perfect::inclusion_proof(&self.at(), index, size))
    }

    /// The proof that the tree of the first `new_size` leaves extends that of the first
    /// `old_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, ProofError> {
        if old_size > new_size {
            return Err(ProofError::Shrunk { old: old_size, new: new_size });
        }
        if new_size > self.size() {
            return Err(ProofError::OutOfRange { index: new_size, size: self.size() });
        }
        Ok(perfect::consistency_proof(&self.at(), old_size, new_size))
    }
}

/// The version of Python's `cryptography` package the independent verifier is run with
/// when the machine's Python lacks it.
#[cfg(feature = "testing")]
pub const VERIFIER_CRYPTOGRAPHY: &str = "48.0.0";

/// A Python that has the `cryptography` package: the machine's, or one in a venv under
/// the build directory, made once (under a file lock, tests run in parallel).
#[cfg(feature = "testing")]
fn verifier_python() -> &'static std::path::Path {
    static PYTHON: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        let has = |python: &std::path::Path| {
            std::process::Command::new(python)
                .args(["-c", "import cryptography"])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let system = std::path::PathBuf::from("python3");
        if has(&system) {
            return system;
        }
        let venv = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/verifier-venv"));
        let python = venv.join("bin/python3");
        std::fs::create_dir_all(venv.parent().expect("target")).expect("the build directory");
        let lock = std::fs::File::create(venv.with_extension("lock")).expect("the venv's lock file");
        lock.lock().expect("the venv's lock");
        if !has(&python) {
            let made = std::process::Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
            assert!(made.is_ok_and(|s| s.success()), "python3 -m venv {}", venv.display());
            let pip = std::process::Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", &format!("cryptography=={VERIFIER_CRYPTOGRAPHY}")])
                .status();
            assert!(pip.is_ok_and(|s| s.success()), "pip install cryptography into {}", venv.display());
        }
        python
    })
}

/// What the independent verifier, `tools/merkle_verify.py` (Python, written from RFC 9162,
/// signatures by the `cryptography` package), says of `checks` (a JSON array in its input
/// form): a verdict each.
#[cfg(feature = "testing")]
pub fn independent_verdicts(checks: &serde_json::Value) -> Vec<bool> {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/merkle_verify.py");
    let mut child = std::process::Command::new(verifier_python())
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the independent verifier");
    child.stdin.take().expect("piped").write_all(checks.to_string().as_bytes()).expect("the verifier reads");
    let out = child.wait_with_output().expect("the verifier ends");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the verifier answers a JSON array of verdicts")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(format!("event {i}").as_bytes())).collect()
    }

    /// Every row a proof or root reads (a node below the stored level read as its leaves)
    /// is among `proof_rows`, for every leaf of every tree up to 300 leaves and a few far
    /// larger ones.
    #[test]
    fn proof_rows_hold_what_a_proof_reads() {
        let stored = |key: NodeKey| -> Vec<NodeKey> {
            match key.level > 0 && key.level < STORED_LEVEL_MIN {
                true => (0..1u64 << key.level).map(|i| NodeKey::new(0, (key.index << key.level) + i)).collect(),
                false => vec![key],
            }
        };
        let sizes = (1..300u64).chain([1 << 20, (1 << 20) + 1, 1_000_000, 1_000_003, (1 << 40) - 1]);
        for size in sizes {
            let indexes: Vec<u64> = match size < 300 {
                true => (0..size).collect(),
                false => vec![0, 1, 15, 16, size / 2, size - 17, size - 2, size - 1],
            };
            for index in indexes {
                let rows = proof_rows(index, size);
                let read =
                    perfect::keys_read(|node| (perfect::inclusion_proof(node, index, size), perfect::root(node, size)));
                for key in read.into_iter().flat_map(stored) {
                    assert!(rows.contains(&key), "leaf {index} of {size}: {key:?} is read but not among the rows");
                }
                assert!(rows.len() <= 2 * 64 + 32, "leaf {index} of {size}: {} rows", rows.len());
            }
        }
    }

    #[test]
    fn the_incremental_tree_gives_the_roots_and_proofs_of_the_definitions() {
        let l = leaves(300);
        let mut tree = Tree::new();
        for (n, leaf) in l.iter().enumerate() {
            tree.push_leaf(*leaf);
            let size = n as u64 + 1;
            assert_eq!(tree.root(size).unwrap(), root(&l[..=n]));
            for i in [0, n / 2, n] {
                assert_eq!(tree.inclusion_proof(i as u64, size).unwrap(), inclusion_proof(&l[..=n], i).unwrap());
            }
            for m in [0, 1, n / 3, n / 2, n, n + 1] {
                assert_eq!(tree.consistency_proof(m as u64, size).unwrap(), consistency_proof(&l[..=n], m).unwrap());
            }
        }
        for size in [1u64, 7, 64, 65, 200, 300] {
            assert_eq!(tree.root(size).unwrap(), root(&l[..size as usize]), "an earlier size");
            let proof = tree.consistency_proof(size / 2, size).unwrap();
            assert_eq!(proof, consistency_proof(&l[..size as usize], size as usize / 2).unwrap());
        }
    }

    #[test]
    fn a_frontier_makes_the_nodes_of_the_whole_tree_and_proofs_read_log_n_of_them() {
        let l = leaves(1000);
        let mut whole = Tree::new();
        let mut stored: std::collections::HashMap<NodeKey, Hash> = Default::default();
        let mut frontier = Frontier::new(0, &[]);
        for (n, leaf) in l.iter().enumerate() {
            whole.push_leaf(*leaf);
            if n == 517 {
                // Picked up again from what a store holds: the peaks of its size.
                let peaks: Vec<Hash> = perfect::peaks(517).iter().map(|k| stored[k]).collect();
                frontier = Frontier::new(517, &peaks);
            }
            stored.extend(frontier.push(*leaf));
        }
        assert_eq!(frontier.root(), root(&l));
        assert_eq!(Frontier::new(0, &[]).root(), root(&[]));
        assert_eq!(stored.len() as u64, 2 * 1000 - u64::from(1000u32.count_ones()), "every perfect subtree once");
        for (key, hash) in &stored {
            assert_eq!(whole.node(*key), Some(*hash), "{key:?}");
        }
        let from_store = |key: NodeKey| stored[&key];
        for size in [1u64, 2, 3, 511, 512, 513, 999, 1000] {
            assert_eq!(perfect::root(&from_store, size), root(&l[..size as usize]));
            let read = perfect::keys_read(|node| perfect::inclusion_proof(node, size - 1, size));
            assert!(read.len() <= 2 * (64 - size.leading_zeros() as usize), "{size}: {}", read.len());
            let read = perfect::keys_read(|node| perfect::consistency_proof(node, size / 3, size));
            assert!(read.len() <= 2 * (64 - size.leading_zeros() as usize), "{size}: {}", read.len());
        }
    }

    #[test]
    fn roots_follow_the_definition() {
        assert_eq!(hex::encode(root(&[])), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let l = leaves(3);
        assert_eq!(root(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
        let l = leaves(5);
        let four = node_hash(&node_hash(&l[0], &l[1]), &node_hash(&l[2], &l[3]));
        assert_eq!(root(&l), node_hash(&four, &l[4]));
    }

    #[test]
    fn every_inclusion_and_consistency_proof_of_small_trees_holds_and_a_changed_one_fails() {
        for n in 1..=40usize {
            let l = leaves(n);
            let r = root(&l);
            for i in 0..n {
                let proof = inclusion_proof(&l, i).unwrap();
                assert_eq!(proof.len(), proof_length(i as u64, n as u64));
                verify_inclusion(i as u64, n as u64, &l[i], &proof, &r).unwrap();
                let other = leaf_hash(b"forged");
                assert!(verify_inclusion(i as u64, n as u64, &other, &proof, &r).is_err());
                if let Some(first) = proof.first() {
                    let mut bent = proof.clone();
                    bent[0] = node_hash(first, first);
                    assert!(verify_inclusion(i as u64, n as u64, &l[i], &bent, &r).is_err());
                }
            }
            for m in 0..=n {
                let proof = consistency_proof(&l, m).unwrap();
                verify_consistency(m as u64, n as u64, &root(&l[..m]), &r, &proof).unwrap();
                if m > 0 && m < n {
                    let mut forged = l[..m].to_vec();
                    forged[m - 1] = leaf_hash(b"rewritten");
                    let err = verify_consistency(m as u64, n as u64, &root(&forged), &r, &proof);
                    assert_eq!(err, Err(ProofError::RootMismatch), "m={m} n={n}");
                }
            }
        }
    }
}
