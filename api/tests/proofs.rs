//! Merkle proofs served over HTTP hold for an independent verifier (`tools/merkle_verify.py`,
//! Python's standard library, written from RFC 9162), on SQLite and PostgreSQL; sizes that
//! do not fit the log and positions it does not have are refused with problems.

mod common;

use orderlog_store::merkle::independent_verdicts;

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::json;

async fn proofs_hold_for_an_independent_verifier(app: App) {
    let operations = app.token("operations").await;
    let audit = app.token("audit").await;
    let mut receipts = Vec::new();
    for i in 1..=9 {
        let path = format!("/stock/sku-{i}/berlin/receipts");
        let done = app.ok(Method::POST, &path, &operations, Some(json!({"quantity": i}))).await;
        assert_eq!(done["receipt"]["position"], done["position"], "{done}");
        receipts.push(done["receipt"]["inclusion_proof"].as_str().unwrap().to_string());
    }
    let get = |path: String| {
        let audit = audit.clone();
        let app = &app;
        async move { app.ok(Method::GET, &path, &audit, None).await }
    };
    let whole = get("/proofs/consistency?from=0".into()).await;
    let size = whole["new_size"].as_u64().unwrap();
    assert_eq!(size, 9);
    let positions = app.ok(Method::GET, "/streams/stock-sku-4@berlin", &audit, None).await;
    let position = positions["events"][0]["position"].as_u64().unwrap();
    let checks = json!([
        get(format!("/proofs/inclusion?position={position}")).await,
        get(format!("/proofs/inclusion?position={position}&tree_size=5")).await,
        get("/proofs/consistency?from=3&to=8".into()).await,
        get("/proofs/consistency?from=4".into()).await,
        get("/proofs/consistency?from=9&to=9".into()).await,
        get(receipts[6].clone()).await,
    ]);
    assert_eq!(independent_verdicts(&checks), [true, true, true, true, true, true], "{checks}");
    // A proof against another root does not hold.
    let mut bent = checks[0].clone();
    bent["root"] = checks[2]["new_root"].clone();
    assert_eq!(independent_verdicts(&json!([bent])), [false]);

    let missing = app.call(Method::GET, "/proofs/inclusion?position=999", Some(&audit), None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.text);
    // A position past what the databases' integers hold (found by schemathesis: it was a 500).
    let huge =
        app.call(Method::GET, "/proofs/inclusion?position=18446744073709551614&tree_size=0", Some(&audit), None).await;
    assert_eq!(huge.status, StatusCode::NOT_FOUND, "{}", huge.text);
    let beyond = app.call(Method::GET, "/proofs/consistency?from=2&to=99", Some(&audit), None).await;
    assert_eq!(beyond.status, StatusCode::CONFLICT, "{}", beyond.text);
    assert!(beyond.body["detail"].as_str().unwrap().contains("9 events"), "{}", beyond.text);
    let early =
        app.call(Method::GET, &format!("/proofs/inclusion?position={position}&tree_size=1"), Some(&audit), None).await;
    assert_eq!(early.status, StatusCode::CONFLICT, "{}", early.text);
    let shop = app.token("shop").await;
    let refused = app.call(Method::GET, "/proofs/consistency?from=0", Some(&shop), None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}

orderlog_store::each_backend! {
    #[tokio::test]
    fn proofs_hold_for_an_independent_verifier(App) on [sqlite, postgres];
}

/// A server with a signing key serves its public key and signed checkpoints that the log
/// extends; an earlier one stays available by its size; without a key, 404.
#[tokio::test]
async fn the_server_signs_checkpoints_the_log_extends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orderlog.db");
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let signer = std::sync::Arc::new(orderlog_api::checkpoints::Signer::new(key.clone()));
    let app = App::signing_on(&path.to_string_lossy(), Box::new(dir), Some(signer)).await;
    let operations = app.token("operations").await;
    let audit = app.token("audit").await;
    let served = app.ok(Method::GET, "/checkpoints/key", &audit, None).await;
    assert_eq!(served["public_key"], hex::encode(key.verifying_key().as_bytes()));
    let none = app.call(Method::GET, "/checkpoints/latest", Some(&audit), None).await;
    assert_eq!(none.status, StatusCode::OK, "an empty log has a checkpoint too: {}", none.text);
    for i in 1..=3 {
        app.ok(Method::POST, &format!("/stock/sku-{i}/berlin/receipts"), &operations, Some(json!({"quantity": i})))
            .await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(orderlog_api::checkpoints::CHECKPOINT_INTERVAL_MS)).await;
    let first = app.ok(Method::GET, "/checkpoints/latest", &audit, None).await;
    assert_eq!(first["tree_size"], 3, "{first}");
    let checkpoint: orderlog_replay::checkpoint::Checkpoint = serde_json::from_value(first.clone()).unwrap();
    checkpoint.check_signature(&key.verifying_key()).unwrap();
    orderlog_replay::checkpoint::verify_against(&*app.store, &checkpoint, &key.verifying_key()).await.unwrap();
    // The consistency proof from the signed size to the log now leads to the signed root.
    app.ok(Method::POST, "/stock/sku-9/berlin/receipts", &operations, Some(json!({"quantity": 9}))).await;
    let proof = app.ok(Method::GET, "/proofs/consistency?from=3", &audit, None).await;
    assert_eq!(proof["old_root"], first["root_hash"]);
    let signed = json!({"kind": "checkpoint", "public_key": served["public_key"], "checkpoint": first});
    assert_eq!(independent_verdicts(&json!([proof, signed])), [true, true]);
    let kept = app.ok(Method::GET, "/checkpoints/latest?tree_size=3", &audit, None).await;
    assert_eq!(kept, first);
    let unknown = app.call(Method::GET, "/checkpoints/latest?tree_size=2", Some(&audit), None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    let huge = app.call(Method::GET, "/checkpoints/latest?tree_size=18446744073709551615", Some(&audit), None).await;
    assert_eq!(huge.status, StatusCode::NOT_FOUND, "{}", huge.text);

    let plain = App::sqlite().await;
    let audit = plain.token("audit").await;
    let reply = plain.call(Method::GET, "/checkpoints/key", Some(&audit), None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
}

/// `orderlog serve`'s maintainer keeps the stored tree up to the log and signs a checkpoint
/// at the interval while the log grows, without anyone asking, and publishes each to the
/// subscribers of `checkpoint.signed`.
#[tokio::test]
async fn the_maintainer_extends_the_tree_and_signs_at_the_interval() {
    use orderlog_processes::webhooks::{WebhookConfig, Webhooks};
    use std::sync::Arc;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let app = App::sqlite_in(dir.path()).await;
    let db = orderlog_api::database::Database::open(&dir.path().join("orderlog.db").to_string_lossy()).await.unwrap();
    let webhooks =
        Webhooks::new(db.processes().await.unwrap(), WebhookConfig { allow_private: true, ..Default::default() });
    let auditor =
        webhooks.create("http://127.0.0.1:9/checkpoints", &["checkpoint.signed".into()], "auditor").await.unwrap();
    let operations = app.token("operations").await;
    let proofs = Arc::new(orderlog_replay::checkpoint::TreeFollower::new(app.store.clone()));
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let signer = Arc::new(orderlog_api::checkpoints::Signer::new(key.clone()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let maintainer = tokio::spawn(orderlog_api::checkpoints::maintain(
        proofs.clone(),
        Some((signer, Duration::from_millis(300))),
        Some(webhooks.clone()),
        stopped,
    ));
    for i in 1..=4 {
        app.ok(Method::POST, &format!("/stock/sku-{i}/berlin/receipts"), &operations, Some(json!({"quantity": i})))
            .await;
    }
    let mut kept = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        kept = proofs.kept(None).await.unwrap();
        if kept.as_ref().is_some_and(|c| c.tree_size == 4) {
            break;
        }
    }
    let kept = kept.expect("a checkpoint was signed at the interval");
    assert_eq!(kept.tree_size, 4);
    kept.check_signature(&key.verifying_key()).unwrap();
    assert_eq!(app.store.tree_size().await.unwrap().0, 4, "the tree follows the log");
    let published = webhooks.deliveries(&auditor.webhook.id, 50).await.unwrap();
    assert!(
        published.iter().any(|(m, _)| m.event_type == "checkpoint.signed" && m.sequence == 4),
        "the checkpoint of 4 events is queued for the auditor: {published:?}"
    );
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), maintainer).await.unwrap().unwrap();
}
