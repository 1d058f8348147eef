//! Idempotency compares a retried command with the first by a hash of its canonical
//! encoding (version 1). These hashes were written by the build before the command
//! registry; a retry sent after any refactor must still match them.

use orderlog_commands::Command;

/// (the command's canonical encoding, its hash) as an earlier build stored them.
const FIXTURES: &[(&str, &str)] = &[
    (
        // Written since carts take prices from the catalog.
        r#"{"target":"cart","cart_id":"cart-1","command":{"type":"add_item","sku":"mug","quantity":2}}"#,
        "3fc46d661963e2cd25cc608239fce8f32901e5754e34ceb8aa9bfa1177f7b698",
    ),
    (
        r#"{"target":"cart","cart_id":"cart-1","command":{"type":"create","currency":"EUR","customer":{"kind":"guest","email":"a@example.com"}}}"#,
        "73b903d00dfe4ca7674c05adabfcd31abf60a933b3f9647dc9103bf0c308f1d6",
    ),
    (
        // Written since the server computes tax.
        r#"{"target":"checkout","checkout":{"cart_id":"cart-1","order_id":"order-1","location":"berlin","sources":{"mug":"hamburg"}}}"#,
        "d01c09e989dd0792f4ef289c92cd9caf299d3b70b3f92e4de4de661bc368dff7",
    ),
    (
        r#"{"target":"order","order_id":"order-1","command":{"type":"capture_payment","amount":{"amount":2500,"currency":"EUR"},"provider_event_id":"evt_1"}}"#,
        "bd6799a6ce51991fc361585a05cfb4cc6afc4309f9b86eb37b36005d1ccf70c6",
    ),
    (
        r#"{"target":"cancel_order","order_id":"order-1","reason":"customer asked"}"#,
        "8457952874efe1f5559e0a21278d33250f0a9c2860b3d3fb83d9c79776e0a2e3",
    ),
    (
        r#"{"target":"receive_return","order_id":"order-1","return_id":"ret-1","lines":[{"sku":"mug","quantity":1,"restock":true}]}"#,
        "66a0ce6c2e453662f7b4c6a5248f47938b55d5b0d2eb27d7fdd12aa54b7073e9",
    ),
    (
        r#"{"target":"stock","stock":{"sku":"mug","location":"berlin"},"command":{"type":"receive","quantity":10,"reference":"PO-7"}}"#,
        "a3944f94e2254eaafdad126410ce77acebaa96a8ebfa900d6ff4e088528a524e",
    ),
    (
        r#"{"target":"shipment","shipment_id":"shipment-1","command":{"type":"ship","carrier":"dhl","tracking_number":"123"}}"#,
        "3d15617e7d930c0c75df7d855d1f93a2ca21a481fd43601c3f386b0526aadca1",
    ),
];

/// Commands earlier builds accepted that this one refuses, each with the word the refusal
/// names: an add-item that carried its own price (the catalog prices lines now), and a
/// checkout that named its tax rate (the server computes tax now; its hash was
/// c1fa0247f6eec9fcb92ed6e7d1bc11d125e4ecfb5172f84ebb4c95c8c3d32f19). Their stored events
/// keep their hash; a retry of one is refused rather than matched.
const RETIRED: &[(&str, &str)] = &[
    (
        r#"{"target":"cart","cart_id":"cart-1","command":{"type":"add_item","sku":"mug","quantity":2,"unit_price":{"amount":1250,"currency":"EUR"}}}"#,
        "unit_price",
    ),
    (
        r#"{"target":"checkout","checkout":{"cart_id":"cart-1","order_id":"order-1","location":"berlin","sources":{"mug":"hamburg"},"tax_rate_bps":1900}}"#,
        "tax_rate_bps",
    ),
];

#[test]
fn retired_commands_are_refused_by_name() {
    for (encoding, word) in RETIRED {
        let error = serde_json::from_str::<Command>(encoding).unwrap_err().to_string();
        assert!(error.contains(word), "{encoding}: {error}");
    }
}

#[test]
fn hashes_written_by_earlier_builds_still_match() {
    for (encoding, hash) in FIXTURES {
        let command: Command = serde_json::from_str(encoding).unwrap_or_else(|e| panic!("{encoding}: {e}"));
        assert_eq!(serde_json::to_string(&command).unwrap(), *encoding, "the canonical encoding changed");
        assert_eq!(command.hash(), *hash, "{encoding}");
    }
}

#[test]
fn another_command_has_another_hash() {
    let first: Command = serde_json::from_str(FIXTURES[0].0).unwrap();
    let other: Command = serde_json::from_str(&FIXTURES[0].0.replace("\"quantity\":2", "\"quantity\":3")).unwrap();
    assert_ne!(first, other);
    assert_ne!(first.hash(), other.hash());
}
