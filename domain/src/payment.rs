//! A payment intent (`payment-{id}`): one attempt to take an order's money through a payment
//! provider. Every call to the provider is first a *requested* event carrying the provider
//! idempotency key `{payment}:{operation}:{sequence}`, then a *succeeded* or *failed* event
//! once the provider has answered (by its API's response or by a webhook, whichever comes
//! first), so a process that crashes between the two sends the same key again and the
//! provider does the work once.
//!
//! The invariants: captured ≤ authorized, refunded ≤ captured, a void only while nothing is
//! captured or being captured, and a failed, voided or expired intent never changes again.
//! Outcomes arriving twice (a webhook and the API response, or a webhook delivered twice)
//! change nothing the second time.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cart::check_text;
use crate::{Decider, Money, OrderId, PaymentId, Rejection};

/// Where an intent is in its lifecycle; captures and refunds are amounts beside it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    #[default]
    NotStarted,
    /// Authorization requested, no answer yet.
    Authorizing,
    /// The provider asks the shopper to act (3-D Secure) before it authorizes.
    RequiresAction,
    Authorized,
    Failed,
    Voided,
    Expired,
}

impl PaymentStatus {
    /// Failed, voided and expired intents never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, PaymentStatus::Failed | PaymentStatus::Voided | PaymentStatus::Expired)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::NotStarted => "not_started",
            PaymentStatus::Authorizing => "authorizing",
            PaymentStatus::RequiresAction => "requires_action",
            PaymentStatus::Authorized => "authorized",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Voided => "voided",
            PaymentStatus::Expired => "expired",
        }
    }
}

/// An operation sent to the provider and not yet answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    Authorize,
    Capture,
    Void,
    Refund,
}

impl OperationKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            OperationKind::Authorize => "authorize",
            OperationKind::Capture => "capture",
            OperationKind::Void => "void",
            OperationKind::Refund => "refund",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pending {
    pub kind: OperationKind,
    /// Minor units; 0 for an authorization (its amount is the intent's) and a void.
    pub amount: i64,
    pub final_capture: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PaymentState {
    pub payment_id: Option<PaymentId>,
    pub order_id: Option<OrderId>,
    /// What the intent asks for.
    pub amount: Option<Money>,
    pub payment_method: String,
    pub provider: String,
    pub status: PaymentStatus,
    pub provider_ref: Option<String>,
    pub authorized: i64,
    pub captured: i64,
    pub refunded: i64,
    /// A final capture happened: the provider released what was not captured.
    pub capture_closed: bool,
    /// Unix seconds after which the provider no longer captures the authorization.
    pub capture_before: Option<i64>,
    /// Operations requested and not answered, by idempotency key.
    pub pending: BTreeMap<String, Pending>,
    /// Requests made of each operation kind (the sequence in the next key).
    pub sequence: BTreeMap<String, u32>,
    pub provider_events: BTreeSet<String>,
    pub disputes: BTreeMap<String, String>,
    pub failure: Option<String>,
}

impl PaymentState {
    pub fn currency(&self) -> Option<crate::Currency> {
        self.amount.map(|m| m.currency)
    }

    fn pending_sum(&self, kind: OperationKind) -> i64 {
        self.pending.values().filter(|p| p.kind == kind).map(|p| p.amount).sum()
    }

    /// Authorized and neither captured nor being captured.
    pub fn capturable(&self) -> i64 {
        if self.status != PaymentStatus::Authorized || self.capture_closed {
            return 0;
        }
        self.authorized - self.captured - self.pending_sum(OperationKind::Capture)
    }

    /// Captured or being captured, and neither refunded nor being refunded. A refund asked
    /// while its capture is under way waits for the capture before it goes to the provider.
    pub fn refundable(&self) -> i64 {
        self.captured + self.pending_sum(OperationKind::Capture)
            - self.refunded
            - self.pending_sum(OperationKind::Refund)
    }

    /// Pending refunds that what is captured now covers, in the order they were asked: what
    /// may go to the provider.
    pub fn sendable_refunds(&self) -> Vec<(String, i64)> {
        let mut refunds: Vec<(&String, &Pending)> =
            self.pending.iter().filter(|(_, p)| p.kind == OperationKind::Refund).collect();
        refunds.sort_by_key(|(key, _)| sequence_of(key));
        let mut room = self.captured - self.refunded;
        let mut out = vec![];
        for (key, p) in refunds {
            if p.amount > room {
                break;
            }
            room -= p.amount;
            out.push((key.clone(), p.amount));
        }
        out
    }

    pub fn void_pending(&self) -> bool {
        self.pending.values().any(|p| p.kind == OperationKind::Void)
    }

    fn key(&self, kind: &OperationKind) -> String {
        let seq = self.sequence.get(kind.as_str()).copied().unwrap_or(0) + 1;
        let id = self.payment_id.as_ref().map(|p| p.as_str()).unwrap_or("");
        format!("{id}:{}:{seq}", kind.as_str())
    }

    fn pending_of(&self, key: &str, kind: OperationKind) -> Option<&Pending> {
        self.pending.get(key).filter(|p| p.kind == kind)
    }
}

impl PaymentId {
    /// The id of an order's `attempt`th payment: `{order}.p{attempt}`, or for an order id too
    /// long to leave room, a digest of it in its place.
    pub fn for_order(order: &OrderId, attempt: u32) -> PaymentId {
        use sha2::Digest;
        let suffix = format!(".p{attempt}");
        let base = if order.as_str().len() + suffix.len() <= crate::ids::ID_BYTES_MAX {
            order.as_str().to_string()
        } else {
            hex::encode(sha2::Sha256::digest(order.as_str().as_bytes()))
        };
        PaymentId::parse(format!("{base}{suffix}")).expect("an order id with a suffix is an id")
    }
}

/// What an operator or a process may ask of an intent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PaymentCommand {
    /// Captures `amount`; a final capture releases what is left of the authorization.
    RequestCapture {
        amount: Money,
        final_capture: bool,
        reason: String,
    },
    /// Releases the authorization (nothing may be captured).
    RequestVoid {
        reason: String,
    },
    RequestRefund {
        amount: Money,
        reason: String,
    },
}

/// An outcome the provider reported: by the response to a request (`key`) or by a webhook
/// (`provider_event_id`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PaymentOutcome {
    Authorized {
        provider_ref: String,
        amount: Money,
        capture_before: Option<i64>,
    },
    ActionRequired {
        provider_ref: String,
        next_action: String,
    },
    AuthorizationFailed {
        code: String,
        reason: String,
    },
    /// The answer to the capture request `key`.
    Captured {
        key: String,
        amount: Money,
    },
    CaptureFailed {
        key: String,
        reason: String,
    },
    /// The provider has received `total` in all: pending captures it covers succeeded.
    CapturedTotal {
        total: Money,
    },
    Voided {},
    VoidFailed {
        reason: String,
    },
    /// The provider cancelled the authorization by itself (it expired).
    AuthorizationExpired {},
    Refunded {
        key: String,
        amount: Money,
        refund_ref: String,
    },
    RefundFailed {
        key: String,
        reason: String,
    },
    DisputeOpened {
        dispute_ref: String,
        amount: Money,
        reason: String,
    },
    DisputeClosed {
        dispute_ref: String,
        status: String,
    },
}

/// Everything the payment decider does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PaymentAction {
    /// Starts the intent for an order's total and requests its authorization (the pay flow).
    Initiate {
        payment_id: PaymentId,
        order_id: OrderId,
        amount: Money,
        payment_method: String,
        provider: String,
    },
    Command(PaymentCommand),
    /// A provider's outcome; a webhook names its event id, and one seen before changes nothing.
    Record {
        outcome: PaymentOutcome,
        provider_event_id: Option<String>,
    },
}

events! {
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentEvent {
    PaymentInitiated { payment_id: PaymentId, order_id: OrderId, amount: Money, payment_method: String, provider: String },
    AuthorizationRequested { key: String },
    PaymentActionRequired { provider_ref: String, next_action: String },
    IntentAuthorized { provider_ref: String, amount: Money, capture_before: Option<i64> },
    AuthorizationFailed { code: String, reason: String },
    CaptureRequested { key: String, amount: Money, final_capture: bool, reason: String },
    IntentCaptured { key: String, amount: Money },
    CaptureFailed { key: String, reason: String },
    VoidRequested { key: String, reason: String },
    IntentVoided { key: Option<String> },
    VoidFailed { key: String, reason: String },
    RefundRequested { key: String, amount: Money, reason: String },
    IntentRefunded { key: String, amount: Money, refund_ref: String },
    RefundFailed { key: String, reason: String },
    AuthorizationExpired {},
    DisputeOpened { dispute_ref: String, amount: Money, reason: String },
    DisputeClosed { dispute_ref: String, status: String },
    /// A webhook that changed something, recorded with what it changed.
    ProviderEventReceived { provider_event_id: String },
}
}

pub struct Payment;

fn same_currency(state: &PaymentState, amount: Money) -> Result<(), Rejection> {
    crate::money::check_amount("amount", amount.amount, 1)?;
    match state.currency() {
        Some(c) if c != amount.currency => {
            Err(Rejection::conflict(format!("amount: currency {} differs from the payment's {c}", amount.currency)))
        }
        _ => Ok(()),
    }
}

fn money(state: &PaymentState, amount: i64) -> String {
    match state.currency() {
        Some(c) => Money::new(amount, c).to_string(),
        None => amount.to_string(),
    }
}

impl Decider for Payment {
    type Command = PaymentAction;
    type Event = PaymentEvent;
    type State = PaymentState;

    fn decide(action: &PaymentAction, state: &PaymentState) -> Result<Vec<PaymentEvent>, Rejection> {
        use PaymentEvent as E;
        if let PaymentAction::Initiate { payment_id, order_id, amount, payment_method, provider } = action {
            if state.status != PaymentStatus::NotStarted {
                return Err(Rejection::conflict(format!("payment {payment_id}: already initiated")));
            }
            check_text("payment_method", payment_method)?;
            crate::ids::check_id("provider", provider)?;
            crate::money::check_amount("amount", amount.amount, 1)?;
            let key = format!("{payment_id}:{}:1", OperationKind::Authorize.as_str());
            return Ok(vec![
                E::PaymentInitiated {
                    payment_id: payment_id.clone(),
                    order_id: order_id.clone(),
                    amount: *amount,
                    payment_method: payment_method.clone(),
                    provider: provider.clone(),
                },
                E::AuthorizationRequested { key },
            ]);
        }
        let Some(id) = &state.payment_id else {
            return Err(Rejection::not_found("payment: no such payment"));
        };
        match action {
            PaymentAction::Initiate { .. } => unreachable!("handled above"),
            PaymentAction::Command(command) => decide_command(command, state, id),
            PaymentAction::Record { outcome, provider_event_id } => {
                if let Some(event_id) = provider_event_id {
                    check_text("provider_event_id", event_id)?;
                    if state.provider_events.contains(event_id) {
                        return Ok(vec![]);
                    }
                }
                let mut events = record(outcome, state)?;
                if let (Some(event_id), false) = (provider_event_id, events.is_empty()) {
                    events.push(E::ProviderEventReceived { provider_event_id: event_id.clone() });
                }
                Ok(events)
            }
        }
    }

    fn evolve(mut state: PaymentState, event: &PaymentEvent) -> PaymentState {
        use PaymentEvent as E;
        let request = |state: &mut PaymentState, key: &str, kind: OperationKind, amount: i64, final_capture| {
            *state.sequence.entry(kind.as_str().to_string()).or_default() += 1;
            state.pending.insert(key.to_string(), Pending { kind, amount, final_capture });
        };
        match event {
            E::PaymentInitiated { payment_id, order_id, amount, payment_method, provider } => {
                state.payment_id = Some(payment_id.clone());
                state.order_id = Some(order_id.clone());
                state.amount = Some(*amount);
                state.payment_method = payment_method.clone();
                state.provider = provider.clone();
            }
            E::AuthorizationRequested { key } => {
                request(&mut state, key, OperationKind::Authorize, 0, false);
                state.status = PaymentStatus::Authorizing;
            }
            E::PaymentActionRequired { provider_ref, .. } => {
                state.provider_ref = Some(provider_ref.clone());
                state.status = PaymentStatus::RequiresAction;
            }
            E::IntentAuthorized { provider_ref, amount, capture_before } => {
                state.pending.retain(|_, p| p.kind != OperationKind::Authorize);
                state.provider_ref = Some(provider_ref.clone());
                state.authorized = amount.amount;
                state.capture_before = *capture_before;
                state.status = PaymentStatus::Authorized;
            }
            E::AuthorizationFailed { code, reason } => {
                state.pending.clear();
                state.failure = Some(format!("{code}: {reason}"));
                state.status = PaymentStatus::Failed;
            }
            E::CaptureRequested { key, amount, final_capture, .. } => {
                request(&mut state, key, OperationKind::Capture, amount.amount, *final_capture);
            }
            E::IntentCaptured { key, amount } => {
                if let Some(p) = state.pending.remove(key) {
                    state.capture_closed |= p.final_capture;
                }
                state.captured += amount.amount;
            }
            E::CaptureFailed { key, .. } | E::VoidFailed { key, .. } | E::RefundFailed { key, .. } => {
                state.pending.remove(key);
            }
            E::VoidRequested { key, .. } => request(&mut state, key, OperationKind::Void, 0, false),
            E::IntentVoided { .. } => {
                state.pending.clear();
                state.status = PaymentStatus::Voided;
            }
            E::RefundRequested { key, amount, .. } => {
                request(&mut state, key, OperationKind::Refund, amount.amount, false);
            }
            E::IntentRefunded { key, amount, .. } => {
                state.pending.remove(key);
                state.refunded += amount.amount;
            }
            E::AuthorizationExpired {} => {
                state.pending.clear();
                state.status = PaymentStatus::Expired;
            }
            E::DisputeOpened { dispute_ref, .. } => {
                state.disputes.insert(dispute_ref.clone(), "open".to_string());
            }
            E::DisputeClosed { dispute_ref, status } => {
                state.disputes.insert(dispute_ref.clone(), status.clone());
            }
            E::ProviderEventReceived { provider_event_id } => {
                state.provider_events.insert(provider_event_id.clone());
            }
        }
        state
    }
}

fn decide_command(
    command: &PaymentCommand,
    state: &PaymentState,
    id: &PaymentId,
) -> Result<Vec<PaymentEvent>, Rejection> {
    use PaymentEvent as E;
    if state.status.is_terminal() {
        return Err(Rejection::conflict(format!("payment {id}: is {}", state.status.as_str())));
    }
    Ok(match command {
        PaymentCommand::RequestCapture { amount, final_capture, reason } => {
            same_currency(state, *amount)?;
            check_text("reason", reason)?;
            if state.status != PaymentStatus::Authorized {
                return Err(Rejection::conflict(format!(
                    "payment {id}: is {}; only an authorized payment can be captured",
                    state.status.as_str()
                )));
            }
            if state.void_pending() {
                return Err(Rejection::conflict(format!("payment {id}: a void is under way")));
            }
            if amount.amount > state.capturable() {
                return Err(Rejection::conflict(format!(
                    "amount: capturing {amount} would exceed the {} authorized and not yet captured",
                    money(state, state.capturable())
                )));
            }
            let key = state.key(&OperationKind::Capture);
            vec![E::CaptureRequested { key, amount: *amount, final_capture: *final_capture, reason: reason.clone() }]
        }
        PaymentCommand::RequestVoid { reason } => {
            check_text("reason", reason)?;
            if state.void_pending() {
                return Ok(vec![]);
            }
            if state.captured > 0 || state.pending_sum(OperationKind::Capture) > 0 {
                return Err(Rejection::conflict(format!(
                    "payment {id}: {} is captured or being captured; refund instead of voiding",
                    money(state, state.captured + state.pending_sum(OperationKind::Capture))
                )));
            }
            let key = state.key(&OperationKind::Void);
            vec![E::VoidRequested { key, reason: reason.clone() }]
        }
        PaymentCommand::RequestRefund { amount, reason } => {
            same_currency(state, *amount)?;
            check_text("reason", reason)?;
            if amount.amount > state.refundable() {
                return Err(Rejection::conflict(format!(
                    "amount: refunding {amount} would exceed the {} captured and not yet refunded",
                    money(state, state.refundable())
                )));
            }
            let key = state.key(&OperationKind::Refund);
            vec![E::RefundRequested { key, amount: *amount, reason: reason.clone() }]
        }
    })
}

/// The events an outcome adds; none when the intent already shows it.
fn record(outcome: &PaymentOutcome, state: &PaymentState) -> Result<Vec<PaymentEvent>, Rejection> {
    use PaymentEvent as E;
    use PaymentOutcome as O;
    let status = state.status;
    if status.is_terminal() {
        // A failed, voided or expired intent is done: later answers are about nothing.
        return Ok(vec![]);
    }
    Ok(match outcome {
        O::Authorized { provider_ref, amount, capture_before } => {
            check_text("provider_ref", provider_ref)?;
            same_currency(state, *amount)?;
            if !matches!(status, PaymentStatus::Authorizing | PaymentStatus::RequiresAction) {
                return Ok(vec![]);
            }
            if Some(*amount) != state.amount {
                return Err(Rejection::conflict(format!(
                    "amount: the provider authorized {amount}, the payment asked for {}",
                    money(state, state.amount.map_or(0, |m| m.amount))
                )));
            }
            vec![E::IntentAuthorized {
                provider_ref: provider_ref.clone(),
                amount: *amount,
                capture_before: *capture_before,
            }]
        }
        O::ActionRequired { provider_ref, next_action } => {
            check_text("provider_ref", provider_ref)?;
            check_text("next_action", next_action)?;
            if status != PaymentStatus::Authorizing {
                return Ok(vec![]);
            }
            vec![E::PaymentActionRequired { provider_ref: provider_ref.clone(), next_action: next_action.clone() }]
        }
        O::AuthorizationFailed { code, reason } => {
            check_text("code", code)?;
            check_text("reason", reason)?;
            if !matches!(status, PaymentStatus::Authorizing | PaymentStatus::RequiresAction) {
                return Ok(vec![]);
            }
            vec![E::AuthorizationFailed { code: code.clone(), reason: reason.clone() }]
        }
        O::Captured { key, amount } => {
            same_currency(state, *amount)?;
            let Some(p) = state.pending_of(key, OperationKind::Capture) else { return Ok(vec![]) };
            if amount.amount != p.amount {
                return Err(Rejection::conflict(format!(
                    "amount: the provider captured {amount} for {key}, which asked for {}",
                    money(state, p.amount)
                )));
            }
            vec![E::IntentCaptured { key: key.clone(), amount: *amount }]
        }
        O::CaptureFailed { key, reason } => {
            check_text("reason", reason)?;
            match state.pending_of(key, OperationKind::Capture) {
                Some(_) => vec![E::CaptureFailed { key: key.clone(), reason: reason.clone() }],
                None => vec![],
            }
        }
        O::CapturedTotal { total } => {
            crate::money::check_amount("total", total.amount, 0)?;
            same_currency(state, Money::new(1, total.currency))?;
            // Pending captures in the order they were requested, as far as the total covers.
            let mut captures: Vec<(&String, &Pending)> =
                state.pending.iter().filter(|(_, p)| p.kind == OperationKind::Capture).collect();
            captures.sort_by_key(|(key, _)| sequence_of(key));
            let mut covered = state.captured;
            let mut events = vec![];
            for (key, p) in captures {
                if covered + p.amount > total.amount {
                    break;
                }
                covered += p.amount;
                events.push(E::IntentCaptured { key: key.clone(), amount: Money::new(p.amount, total.currency) });
            }
            events
        }
        O::Voided {} => {
            if !matches!(status, PaymentStatus::Authorized | PaymentStatus::RequiresAction | PaymentStatus::Authorizing)
            {
                return Ok(vec![]);
            }
            if state.captured > 0 {
                return Err(Rejection::conflict(format!(
                    "payment: the provider reports a void after {} was captured",
                    money(state, state.captured)
                )));
            }
            let key = state.pending.iter().find(|(_, p)| p.kind == OperationKind::Void).map(|(k, _)| k.clone());
            match key {
                Some(key) => vec![E::IntentVoided { key: Some(key) }],
                // Cancelled by the provider, not by us: the authorization ran out.
                None => vec![E::AuthorizationExpired {}],
            }
        }
        O::AuthorizationExpired {} => {
            if state.captured > 0 {
                return Ok(vec![]);
            }
            vec![E::AuthorizationExpired {}]
        }
        O::VoidFailed { reason } => {
            check_text("reason", reason)?;
            match state.pending.iter().find(|(_, p)| p.kind == OperationKind::Void) {
                Some((key, _)) => vec![E::VoidFailed { key: key.clone(), reason: reason.clone() }],
                None => vec![],
            }
        }
        O::Refunded { key, amount, refund_ref } => {
            same_currency(state, *amount)?;
            check_text("refund_ref", refund_ref)?;
            let Some(p) = state.pending_of(key, OperationKind::Refund) else { return Ok(vec![]) };
            if amount.amount != p.amount {
                return Err(Rejection::conflict(format!(
                    "amount: the provider refunded {amount} for {key}, which asked for {}",
                    money(state, p.amount)
                )));
            }
            if state.refunded + amount.amount > state.captured {
                return Err(Rejection::conflict(format!(
                    "amount: a refund of {amount} is more than the {} captured and not refunded",
                    money(state, state.captured - state.refunded)
                )));
            }
            vec![E::IntentRefunded { key: key.clone(), amount: *amount, refund_ref: refund_ref.clone() }]
        }
        O::RefundFailed { key, reason } => {
            check_text("reason", reason)?;
            match state.pending_of(key, OperationKind::Refund) {
                Some(_) => vec![E::RefundFailed { key: key.clone(), reason: reason.clone() }],
                None => vec![],
            }
        }
        O::DisputeOpened { dispute_ref, amount, reason } => {
            check_text("dispute_ref", dispute_ref)?;
            check_text("reason", reason)?;
            same_currency(state, *amount)?;
            if state.disputes.contains_key(dispute_ref) {
                return Ok(vec![]);
            }
            vec![E::DisputeOpened { dispute_ref: dispute_ref.clone(), amount: *amount, reason: reason.clone() }]
        }
        O::DisputeClosed { dispute_ref, status } => {
            check_text("status", status)?;
            match state.disputes.get(dispute_ref) {
                Some(open) if open == "open" => {
                    vec![E::DisputeClosed { dispute_ref: dispute_ref.clone(), status: status.clone() }]
                }
                Some(_) => vec![],
                None => return Err(Rejection::conflict(format!("dispute {dispute_ref}: was never opened"))),
            }
        }
    })
}

/// The sequence number at the end of an idempotency key.
fn sequence_of(key: &str) -> u32 {
    key.rsplit(':').next().and_then(|s| s.parse().ok()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;

/// What `quantity` units of an order's line cost the buyer: the line's price less its
/// discount plus any tax added on top, in proportion, rounded down (the last capture or a
/// whole-order refund takes what rounding leaves). Shipping belongs to no line.
pub fn lines_value(order: &crate::order::PlacedOrder, lines: &[(crate::Sku, u32)]) -> i64 {
    let mut value: i128 = 0;
    for (sku, quantity) in lines {
        let Some(line) = order.lines.iter().find(|l| &l.sku == sku) else { continue };
        if line.quantity == 0 {
            continue;
        }
        let gross = i128::from(line.unit_price.amount) * i128::from(line.quantity);
        let discount = line.discount.map_or(0, |d| i128::from(d.amount));
        let on_top = line.tax.as_ref().filter(|t| !t.included).map_or(0, |t| i128::from(t.tax.amount));
        let total = gross - discount + on_top;
        value += total * i128::from((*quantity).min(line.quantity)) / i128::from(line.quantity);
    }
    i64::try_from(value).unwrap_or(i64::MAX)
}
