//! The Merkle tree's proofs, for tree sizes up to 10 000 (every power-of-two boundary
//! among them): each inclusion and consistency proof holds, and one of a rewritten
//! history does not; a tree kept as its perfect subtrees (as the store keeps it) gives the
//! same roots and proofs; and an independent verifier (`tools/merkle_verify.py`, written
//! from RFC 9162) agrees on every verdict.

use orderlog_store::merkle::{
    consistency_proof, inclusion_proof, leaf_hash, perfect, root, verify_consistency, verify_inclusion, Frontier, Hash,
    NodeKey,
};
use proptest::prelude::*;
use serde_json::{json, Value};

fn leaves(n: usize) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(format!("event {i}").as_bytes())).collect()
}

/// Sizes at and around every power of two up to 8 192, and any size up to 10 000.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![(0u32..14, -1i64..=1).prop_map(|(p, d)| ((1i64 << p) + d).max(1) as usize), 1usize..=10_000,]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn proofs_hold_for_the_tree_and_fail_for_a_rewritten_one(n in size(), i in any::<prop::sample::Index>(), m in any::<prop::sample::Index>()) {
        let l = leaves(n);
        let r = root(&l);
        let i = i.index(n);
        let proof = inclusion_proof(&l, i).unwrap();
        prop_assert!(verify_inclusion(i as u64, n as u64, &l[i], &proof, &r).is_ok());
        prop_assert!(verify_inclusion(i as u64, n as u64, &leaf_hash(b"forged"), &proof, &r).is_err());
        let m = m.index(n + 1);
        let proof = consistency_proof(&l, m).unwrap();
        prop_assert!(verify_consistency(m as u64, n as u64, &root(&l[..m]), &r, &proof).is_ok());
        if m > 0 && m < n {
            let mut rewritten = l[..m].to_vec();
            rewritten[i.min(m - 1)] = leaf_hash(b"rewritten");
            prop_assert!(verify_consistency(m as u64, n as u64, &root(&rewritten), &r, &proof).is_err());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A tree kept as its perfect subtrees — built leaf by leaf from a frontier, picked up
    /// again from the peaks a store holds at any size — gives the definitions' roots and
    /// proofs, and every proof reads O(log n) stored subtrees.
    #[test]
    fn a_stored_tree_gives_the_roots_and_proofs_of_the_definitions(
        n in size(), restart in any::<prop::sample::Index>(), i in any::<prop::sample::Index>(), m in any::<prop::sample::Index>(),
    ) {
        let l = leaves(n);
        let restart = restart.index(n + 1);
        let mut stored = std::collections::HashMap::<NodeKey, Hash>::new();
        let mut frontier = Frontier::new(0, &[]);
        for (k, leaf) in l.iter().enumerate() {
            if k == restart {
                let peaks: Vec<Hash> = perfect::peaks(k as u64).iter().map(|key| stored[key]).collect();
                frontier = Frontier::new(k as u64, &peaks);
            }
            stored.extend(frontier.push(*leaf));
        }
        prop_assert_eq!(frontier.root(), root(&l));
        let node = |key: NodeKey| stored[&key];
        let (i, m) = (i.index(n), m.index(n + 1));
        prop_assert_eq!(perfect::root(&node, n as u64), root(&l));
        prop_assert_eq!(perfect::inclusion_proof(&node, i as u64, n as u64), inclusion_proof(&l, i).unwrap());
        prop_assert_eq!(perfect::consistency_proof(&node, m as u64, n as u64), consistency_proof(&l, m).unwrap());
        let bound = 2 * (64 - (n as u64).leading_zeros() as usize) + 1;
        let read = perfect::keys_read(|node| (perfect::inclusion_proof(node, i as u64, n as u64), perfect::root(node, n as u64)));
        prop_assert!(read.len() <= bound, "{} nodes read for an inclusion proof in a tree of {}", read.len(), n);
    }
}

fn hexes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

#[test]
fn an_independent_verifier_agrees_on_every_verdict() {
    let mut checks = Vec::new();
    let mut expected = Vec::new();
    let mut sizes: Vec<usize> = (1..=33).collect();
    sizes.extend([63, 64, 65, 127, 128, 129, 1_000, 1_023, 1_024, 1_025, 4_097]);
    for &n in &sizes {
        let l = leaves(n);
        let r = root(&l);
        for i in [0, n / 3, n / 2, n - 1] {
            let proof = inclusion_proof(&l, i).unwrap();
            checks.push(json!({"kind": "inclusion", "index": i, "size": n, "leaf": hex::encode(l[i]), "proof": hexes(&proof), "root": hex::encode(r)}));
            expected.push(true);
            checks.push(json!({"kind": "inclusion", "index": i, "size": n, "leaf": hex::encode(leaf_hash(b"forged")), "proof": hexes(&proof), "root": hex::encode(r)}));
            expected.push(false);
        }
        for m in [0, 1, n / 2, n - 1, n] {
            let proof = consistency_proof(&l, m).unwrap();
            let old = root(&l[..m]);
            checks.push(json!({"kind": "consistency", "old_size": m, "new_size": n, "old_root": hex::encode(old), "new_root": hex::encode(r), "proof": hexes(&proof)}));
            expected.push(true);
            if m > 0 && m < n {
                let mut rewritten = l[..m].to_vec();
                rewritten[0] = leaf_hash(b"rewritten");
                checks.push(json!({"kind": "consistency", "old_size": m, "new_size": n, "old_root": hex::encode(root(&rewritten)), "new_root": hex::encode(r), "proof": hexes(&proof)}));
                expected.push(false);
            }
        }
    }
    for (check, verdict) in checks.iter().zip(&expected) {
        let ours = match check["kind"].as_str().unwrap() {
            "inclusion" => {
                let proof: Vec<Hash> = unhex_all(&check["proof"]);
                verify_inclusion(
                    check["index"].as_u64().unwrap(),
                    check["size"].as_u64().unwrap(),
                    &unhex(&check["leaf"]),
                    &proof,
                    &unhex(&check["root"]),
                )
                .is_ok()
            }
            _ => verify_consistency(
                check["old_size"].as_u64().unwrap(),
                check["new_size"].as_u64().unwrap(),
                &unhex(&check["old_root"]),
                &unhex(&check["new_root"]),
                &unhex_all(&check["proof"]),
            )
            .is_ok(),
        };
        assert_eq!(ours, *verdict, "{check}");
    }
    let theirs = orderlog_store::merkle::independent_verdicts(&Value::Array(checks));
    assert_eq!(theirs, expected);
}

fn unhex(v: &Value) -> Hash {
    hex::decode(v.as_str().unwrap()).unwrap().try_into().unwrap()
}

fn unhex_all(v: &Value) -> Vec<Hash> {
    v.as_array().unwrap().iter().map(unhex).collect()
}
