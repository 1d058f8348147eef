//! The payment decider: its lifecycle, idempotent outcomes and, as a property, its
//! invariants over random histories.

use proptest::prelude::*;

use super::*;
use crate::{Currency, RejectionKind};

fn eur(amount: i64) -> Money {
    Money::new(amount, Currency::parse("EUR").unwrap())
}

fn pay_id() -> PaymentId {
    PaymentId::for_order(&OrderId::parse("o1").unwrap(), 1)
}

fn run(state: PaymentState, action: &PaymentAction) -> Result<(PaymentState, Vec<PaymentEvent>), Rejection> {
    let events = Payment::decide(action, &state)?;
    let state = events.iter().fold(state, Payment::evolve);
    Ok((state, events))
}

fn initiated(amount: i64) -> PaymentState {
    let action = PaymentAction::Initiate {
        payment_id: pay_id(),
        order_id: OrderId::parse("o1").unwrap(),
        amount: eur(amount),
        payment_method: "pm_card_visa".into(),
        provider: "stripe".into(),
    };
    run(PaymentState::default(), &action).unwrap().0
}

fn record(outcome: PaymentOutcome) -> PaymentAction {
    PaymentAction::Record { outcome, provider_event_id: None }
}

fn authorized(amount: i64) -> PaymentState {
    let outcome = PaymentOutcome::Authorized { provider_ref: "pi_1".into(), amount: eur(amount), capture_before: None };
    run(initiated(amount), &record(outcome)).unwrap().0
}

fn command(c: PaymentCommand) -> PaymentAction {
    PaymentAction::Command(c)
}

#[test]
fn an_order_id_too_long_for_a_suffix_gets_a_digest() {
    let long = OrderId::parse("o".repeat(128)).unwrap();
    let id = PaymentId::for_order(&long, 12);
    assert!(id.as_str().len() <= crate::ids::ID_BYTES_MAX);
    assert!(id.as_str().ends_with(".p12"));
    assert_ne!(id, PaymentId::for_order(&OrderId::parse("o".repeat(127)).unwrap(), 12));
    assert_eq!(pay_id().as_str(), "o1.p1");
}

#[test]
fn initiating_requests_the_authorization_with_the_first_key() {
    let state = initiated(1000);
    assert_eq!(state.status, PaymentStatus::Authorizing);
    assert_eq!(state.pending.keys().collect::<Vec<_>>(), vec!["o1.p1:authorize:1"]);
    let again = PaymentAction::Initiate {
        payment_id: pay_id(),
        order_id: OrderId::parse("o1").unwrap(),
        amount: eur(1000),
        payment_method: "pm_card_visa".into(),
        provider: "stripe".into(),
    };
    assert_eq!(run(state, &again).unwrap_err().kind, RejectionKind::Conflict);
}

#[test]
fn the_same_authorization_twice_is_recorded_once() {
    let state = authorized(1000);
    let outcome = PaymentOutcome::Authorized { provider_ref: "pi_1".into(), amount: eur(1000), capture_before: None };
    let (_, events) = run(state, &record(outcome)).unwrap();
    assert!(events.is_empty());
}

#[test]
fn a_webhook_seen_before_changes_nothing_and_a_new_one_is_recorded() {
    let state = initiated(1000);
    let hook = PaymentAction::Record {
        outcome: PaymentOutcome::Authorized { provider_ref: "pi_1".into(), amount: eur(1000), capture_before: Some(9) },
        provider_event_id: Some("evt_1".into()),
    };
    let (state, events) = run(state, &hook).unwrap();
    assert_eq!(events.len(), 2);
    assert!(state.provider_events.contains("evt_1"));
    assert!(run(state, &hook).unwrap().1.is_empty());
}

#[test]
fn an_authorization_for_another_amount_is_refused() {
    let outcome = PaymentOutcome::Authorized { provider_ref: "pi_1".into(), amount: eur(999), capture_before: None };
    let err = run(initiated(1000), &record(outcome)).unwrap_err();
    assert!(err.reason.contains("authorized 9.99 EUR"), "{}", err.reason);
}

#[test]
fn partial_captures_then_a_final_one_close_the_authorization() {
    let state = authorized(1000);
    let capture = |amount, final_capture| {
        command(PaymentCommand::RequestCapture { amount: eur(amount), final_capture, reason: "shipped".into() })
    };
    let (state, events) = run(state, &capture(300, false)).unwrap();
    let PaymentEvent::CaptureRequested { key, .. } = &events[0] else { panic!("{events:?}") };
    assert_eq!(key, "o1.p1:capture:1");
    let err = run(state.clone(), &capture(701, false)).unwrap_err();
    assert!(err.reason.contains("7.00 EUR authorized and not yet captured"), "{}", err.reason);
    let (state, _) = run(state, &record(PaymentOutcome::Captured { key: key.clone(), amount: eur(300) })).unwrap();
    let (state, events) = run(state, &capture(500, true)).unwrap();
    let PaymentEvent::CaptureRequested { key, .. } = &events[0] else { panic!("{events:?}") };
    assert_eq!(key, "o1.p1:capture:2");
    let (state, _) = run(state, &record(PaymentOutcome::CapturedTotal { total: eur(800) })).unwrap();
    assert_eq!(state.captured, 800);
    assert!(state.capture_closed);
    assert_eq!(state.capturable(), 0);
    assert_eq!(run(state, &capture(1, false)).unwrap_err().kind, RejectionKind::Conflict);
}

#[test]
fn a_void_is_refused_once_anything_is_captured_and_a_refund_is_bounded_by_the_capture() {
    let state = authorized(1000);
    let (state, events) = run(
        state,
        &command(PaymentCommand::RequestCapture { amount: eur(400), final_capture: true, reason: "shipped".into() }),
    )
    .unwrap();
    let PaymentEvent::CaptureRequested { key, .. } = &events[0] else { panic!() };
    let void = command(PaymentCommand::RequestVoid { reason: "cancelled".into() });
    assert!(run(state.clone(), &void).unwrap_err().reason.contains("refund instead"));
    let (state, _) = run(state, &record(PaymentOutcome::Captured { key: key.clone(), amount: eur(400) })).unwrap();
    let refund = |amount| command(PaymentCommand::RequestRefund { amount: eur(amount), reason: "return".into() });
    assert!(run(state.clone(), &refund(401)).unwrap_err().reason.contains("4.00 EUR captured and not yet refunded"));
    let (state, events) = run(state, &refund(150)).unwrap();
    let PaymentEvent::RefundRequested { key, .. } = &events[0] else { panic!() };
    let done = PaymentOutcome::Refunded { key: key.clone(), amount: eur(150), refund_ref: "re_1".into() };
    let (state, _) = run(state, &record(done.clone())).unwrap();
    assert_eq!(state.refunded, 150);
    assert!(run(state, &record(done)).unwrap().1.is_empty(), "a refund answered twice counts once");
}

#[test]
fn a_voided_payment_never_changes_again() {
    let (state, _) =
        run(authorized(1000), &command(PaymentCommand::RequestVoid { reason: "cancelled".into() })).unwrap();
    let (state, events) = run(state, &record(PaymentOutcome::Voided {})).unwrap();
    assert_eq!(events, vec![PaymentEvent::IntentVoided { key: Some("o1.p1:void:1".into()) }]);
    assert_eq!(state.status, PaymentStatus::Voided);
    let capture = command(PaymentCommand::RequestCapture { amount: eur(1), final_capture: true, reason: "x".into() });
    assert!(run(state.clone(), &capture).unwrap_err().reason.contains("is voided"));
    let late = PaymentOutcome::Authorized { provider_ref: "pi_1".into(), amount: eur(1000), capture_before: None };
    assert!(run(state, &record(late)).unwrap().1.is_empty());
}

#[test]
fn a_cancel_the_provider_made_itself_is_an_expiry() {
    let (state, events) = run(authorized(1000), &record(PaymentOutcome::Voided {})).unwrap();
    assert_eq!(events, vec![PaymentEvent::AuthorizationExpired {}]);
    assert_eq!(state.status, PaymentStatus::Expired);
}

/// One step of a random history: a command, or an outcome for one of the pending keys (by
/// index) or for a made-up key.
#[derive(Clone, Debug)]
enum Step {
    Capture(i64, bool),
    Void,
    Refund(i64),
    Authorize(i64),
    Decline,
    Answer(usize, bool),
    Total(i64),
    Cancelled,
    Expired,
    Webhook(u8, Box<Step>),
}

fn step() -> impl Strategy<Value = Step> {
    let leaf = prop_oneof![
        (1i64..1200, any::<bool>()).prop_map(|(a, f)| Step::Capture(a, f)),
        Just(Step::Void),
        (1i64..1200).prop_map(Step::Refund),
        prop_oneof![Just(1000i64), 1i64..1200].prop_map(Step::Authorize),
        Just(Step::Decline),
        (0usize..4, any::<bool>()).prop_map(|(i, ok)| Step::Answer(i, ok)),
        (0i64..1500).prop_map(Step::Total),
        Just(Step::Cancelled),
        Just(Step::Expired),
    ];
    prop_oneof![4 => leaf.clone(), 1 => (0u8..4, leaf).prop_map(|(id, s)| Step::Webhook(id, Box::new(s)))]
}

fn action_of(step: &Step, state: &PaymentState) -> PaymentAction {
    let keys: Vec<(String, Pending)> = state.pending.iter().map(|(k, p)| (k.clone(), p.clone())).collect();
    match step {
        Step::Capture(a, f) => {
            command(PaymentCommand::RequestCapture { amount: eur(*a), final_capture: *f, reason: "r".into() })
        }
        Step::Void => command(PaymentCommand::RequestVoid { reason: "r".into() }),
        Step::Refund(a) => command(PaymentCommand::RequestRefund { amount: eur(*a), reason: "r".into() }),
        Step::Authorize(a) => {
            record(PaymentOutcome::Authorized { provider_ref: "pi".into(), amount: eur(*a), capture_before: None })
        }
        Step::Decline => {
            record(PaymentOutcome::AuthorizationFailed { code: "card_declined".into(), reason: "no".into() })
        }
        Step::Answer(i, ok) => {
            let Some((key, p)) = keys.get(*i % keys.len().max(1)).cloned() else {
                return record(PaymentOutcome::Captured { key: "nope:capture:1".into(), amount: eur(1) });
            };
            let amount = eur(p.amount.max(1));
            record(match (p.kind, ok) {
                (OperationKind::Capture, true) => PaymentOutcome::Captured { key, amount },
                (OperationKind::Capture, false) => PaymentOutcome::CaptureFailed { key, reason: "x".into() },
                (OperationKind::Refund, true) => PaymentOutcome::Refunded { key, amount, refund_ref: "re".into() },
                (OperationKind::Refund, false) => PaymentOutcome::RefundFailed { key, reason: "x".into() },
                (OperationKind::Void, true) => PaymentOutcome::Voided {},
                (OperationKind::Void, false) => PaymentOutcome::VoidFailed { reason: "x".into() },
                (OperationKind::Authorize, true) => {
                    PaymentOutcome::Authorized { provider_ref: "pi".into(), amount: eur(1000), capture_before: None }
                }
                (OperationKind::Authorize, false) => {
                    PaymentOutcome::AuthorizationFailed { code: "c".into(), reason: "x".into() }
                }
            })
        }
        Step::Total(t) => record(PaymentOutcome::CapturedTotal { total: eur(*t) }),
        Step::Cancelled => record(PaymentOutcome::Voided {}),
        Step::Expired => record(PaymentOutcome::AuthorizationExpired {}),
        Step::Webhook(id, inner) => match action_of(inner, state) {
            PaymentAction::Record { outcome, .. } => {
                PaymentAction::Record { outcome, provider_event_id: Some(format!("evt_{id}")) }
            }
            other => other,
        },
    }
}

proptest! {
    /// Over any history: captured ≤ authorized, refunded ≤ captured, nothing captured on a
    /// voided intent, a terminal intent never changes, and an outcome recorded twice under
    /// one provider event id changes nothing the second time.
    #[test]
    fn payment_invariants_hold_over_any_history(steps in prop::collection::vec(step(), 1..40)) {
        let mut state = initiated(1000);
        for step in &steps {
            let action = action_of(step, &state);
            let before = state.clone();
            let Ok((after, events)) = run(state.clone(), &action) else { continue };
            prop_assert!(after.captured <= after.authorized, "captured {} > authorized {}", after.captured, after.authorized);
            prop_assert!(after.refunded <= after.captured, "refunded {} > captured {}", after.refunded, after.captured);
            prop_assert!(after.captured >= before.captured && after.refunded >= before.refunded);
            if after.status == PaymentStatus::Voided {
                prop_assert_eq!(after.captured, 0);
            }
            if before.status.is_terminal() {
                prop_assert_eq!(after.status, before.status);
                prop_assert_eq!(after.captured, before.captured);
                prop_assert_eq!(after.refunded, before.refunded);
                prop_assert!(events.is_empty(), "a terminal intent appended {:?}", events);
            }
            if let PaymentAction::Record { provider_event_id: Some(_), .. } = &action {
                prop_assert!(run(after.clone(), &action).unwrap().1.is_empty(), "webhook twice");
            }
            state = after;
        }
    }
}

#[test]
fn a_lines_value_is_its_share_of_price_less_discount_plus_tax_on_top() {
    use crate::order::{OrderLine, PlacedOrder};
    let mut order: PlacedOrder = crate::order::tests::placed_order(0);
    let line = |sku: &str, quantity, unit, discount: Option<i64>| OrderLine {
        sku: crate::Sku::parse(sku).unwrap(),
        location: crate::LocationId::parse("berlin").unwrap(),
        quantity,
        unit_price: eur(unit),
        pricing: None,
        discount: discount.map(eur),
        tax: None,
    };
    order.lines = vec![line("mug", 3, 1_000, Some(100)), line("tea", 1, 500, None)];
    let sku = |s: &str| crate::Sku::parse(s).unwrap();
    assert_eq!(lines_value(&order, &[(sku("mug"), 1)]), 966, "(3000 - 100) / 3, rounded down");
    assert_eq!(lines_value(&order, &[(sku("mug"), 3), (sku("tea"), 1)]), 3_400);
    assert_eq!(lines_value(&order, &[(sku("mug"), 9)]), 2_900, "no more than the line");
    assert_eq!(lines_value(&order, &[(sku("nope"), 1)]), 0);
}

#[test]
fn a_refund_asked_while_its_capture_is_under_way_waits_for_the_capture() {
    let (state, events) = run(
        authorized(1000),
        &command(PaymentCommand::RequestCapture { amount: eur(1000), final_capture: true, reason: "shipped".into() }),
    )
    .unwrap();
    let PaymentEvent::CaptureRequested { key: capture, .. } = &events[0] else { panic!("{events:?}") };
    let refund = command(PaymentCommand::RequestRefund { amount: eur(300), reason: "return".into() });
    let (state, events) = run(state, &refund).unwrap();
    let PaymentEvent::RefundRequested { key, .. } = &events[0] else { panic!("{events:?}") };
    assert!(state.sendable_refunds().is_empty(), "nothing is captured yet");
    let early = PaymentOutcome::Refunded { key: key.clone(), amount: eur(300), refund_ref: "re_1".into() };
    assert!(run(state.clone(), &record(early.clone())).unwrap_err().reason.contains("more than the 0.00 EUR captured"));
    let (state, _) = run(state, &record(PaymentOutcome::Captured { key: capture.clone(), amount: eur(1000) })).unwrap();
    assert_eq!(state.sendable_refunds(), vec![(key.clone(), 300)]);
    let (state, _) = run(state, &record(early)).unwrap();
    assert_eq!((state.captured, state.refunded), (1000, 300));
}
