//! The payment process: a reactor that makes the calls the log asks for and turns what
//! happens to orders into payment requests.
//!
//! - A *requested* event of an intent (authorize, capture, void, refund) → the call to the
//!   provider with the event's idempotency key → the answer recorded on the intent (command
//!   id derived from the requested event, so a replay records nothing twice). A request the
//!   intent no longer waits for (a webhook answered it first) is not sent again. When the
//!   provider's answer is unknown (a timeout, a 5xx) the reaction fails and the runner tries
//!   again with the same key, then parks the event for an operator.
//! - An order's lines shipped → a capture of those lines' value
//!   ([`orderlog_domain::payment::lines_value`]); the shipment that completes the order
//!   captures all that is left of the authorization, final (shipping and rounding included),
//!   which releases nothing because nothing is left.
//! - An order cancelled or expired → its intents not yet captured are voided (an intent
//!   still authorizing as well: the void waits for its provider reference); one captured is
//!   refunded what is left.
//! - A return received → a refund of the returned lines' value. Shipping is not refunded,
//!   unless the return makes every unit of the order returned: then all that is left of the
//!   capture is refunded.
//!
//! - An authorization the provider let lapse (it expired) → the order is cancelled if it
//!   shipped nothing, or held if it shipped part, so nothing ships unpaid.
//!
//! Unrelated payments do not wait for each other: a batch's events are acted on
//! concurrently, stream by stream, each stream's events in log order.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use orderlog_commands::{Command, CommandEnvelope, CommandError, CommandService};
use orderlog_domain::order::{OrderEvent, OrderState};
use orderlog_domain::payment::{
    lines_value, PaymentAction, PaymentCommand, PaymentEvent, PaymentOutcome, PaymentState, PaymentStatus,
};
use orderlog_domain::{AnyState, Decider, DomainEvent, Money, OrderId, PaymentId, StreamId};
use orderlog_processes::reactor::{OnPark, ReactError, Reactor};
use orderlog_store::RecordedEvent;

use crate::gateway::{AuthorizeRequest, GatewayError, Intent, PaymentGateway};

/// Who the process's commands are recorded as.
pub const ACTOR: &str = "process:payments";

pub struct PaymentProcess {
    service: Arc<CommandService>,
    gateway: Arc<dyn PaymentGateway>,
    name: &'static str,
    /// Only streams whose ids contain this (a shop sharing its log with others, each with
    /// its own provider: the demo's runs).
    only: Option<String>,
}

const WANTED: &[&str] = &[
    "AuthorizationRequested",
    "IntentCaptured",
    "AuthorizationExpired",
    "CaptureRequested",
    "VoidRequested",
    "RefundRequested",
    "LinesShipped",
    "OrderCancelled",
    "OrderExpired",
    "ReturnReceived",
];

fn fail(e: impl std::fmt::Display) -> ReactError {
    ReactError(e.to_string())
}

impl PaymentProcess {
    pub const NAME: &'static str = "payments";

    pub fn new(service: Arc<CommandService>, gateway: Arc<dyn PaymentGateway>) -> PaymentProcess {
        PaymentProcess { service, gateway, name: PaymentProcess::NAME, only: None }
    }

    /// A process of its own name (its own checkpoint) that acts only on the streams whose
    /// ids contain `only`.
    pub fn scoped(
        service: Arc<CommandService>,
        gateway: Arc<dyn PaymentGateway>,
        name: &'static str,
        only: String,
    ) -> PaymentProcess {
        PaymentProcess { service, gateway, name, only: Some(only) }
    }

    async fn payment(&self, id: &PaymentId) -> Result<PaymentState, ReactError> {
        match self.service.state(&StreamId::payment(id)).await.map_err(fail)?.0 {
            AnyState::Payment(state) => Ok(*state),
            _ => Err(ReactError(format!("payment-{id} is not a payment's stream"))),
        }
    }

    async fn order(&self, id: &OrderId) -> Result<OrderState, ReactError> {
        match self.service.state(&StreamId::order(id)).await.map_err(fail)?.0 {
            AnyState::Order(state) => Ok(*state),
            _ => Err(ReactError(format!("order-{id} is not an order's stream"))),
        }
    }

    /// Runs `action` on the intent under a command id derived from the triggering event.
    async fn send(
        &self,
        event: &RecordedEvent,
        step: &str,
        payment_id: &PaymentId,
        action: PaymentAction,
    ) -> Result<(), ReactError> {
        let command = Command::Payment { payment_id: payment_id.clone(), action };
        let what = format!("payment {payment_id}: {step} was refused");
        self.execute(event, &format!("{step}:{payment_id}"), command, &what).await
    }

    /// Runs `command` caused by `event`, under the command id `{event id}:{step}` (a replay
    /// of the event runs it once); a refusal fails the reaction, prefixed with `what`.
    async fn execute(&self, event: &RecordedEvent, step: &str, command: Command, what: &str) -> Result<(), ReactError> {
        let mut envelope = CommandEnvelope::new(format!("{}:{step}", event.event_id), ACTOR, command)
            .correlated(event.metadata.correlation_id.clone());
        envelope.causation_id = Some(event.event_id.to_string());
        match self.service.execute(envelope).await {
            Ok(_) => Ok(()),
            Err(CommandError::Rejected(r)) => Err(ReactError(format!("{what}: {}", r.reason))),
            Err(e) => Err(fail(e)),
        }
    }

    async fn answer(
        &self,
        event: &RecordedEvent,
        payment_id: &PaymentId,
        outcome: PaymentOutcome,
    ) -> Result<(), ReactError> {
        let action = PaymentAction::Record { outcome, provider_event_id: None };
        self.send(event, "answer", payment_id, action).await
    }

    /// The provider's intent for an authorization request: created (or, under the same key,
    /// the one created before).
    async fn authorize(&self, state: &PaymentState, key: &str) -> Result<Result<Intent, GatewayError>, ReactError> {
        let (Some(id), Some(order), Some(amount)) = (&state.payment_id, &state.order_id, state.amount) else {
            return Err(ReactError("payment: not initiated".into()));
        };
        let request = AuthorizeRequest {
            key: key.to_string(),
            amount,
            payment_method: state.payment_method.clone(),
            payment_id: id.to_string(),
            order_id: order.to_string(),
        };
        Ok(self.gateway.authorize(&request).await)
    }

    async fn on_payment(&self, event: &RecordedEvent, id: &PaymentId, e: &PaymentEvent) -> Result<(), ReactError> {
        if let PaymentEvent::AuthorizationExpired {} = e {
            return self.expired(event, id).await;
        }
        if let PaymentEvent::IntentCaptured { .. } = e {
            // Refunds asked while this capture was under way may go now.
            let state = self.payment(id).await?;
            for (key, amount) in state.sendable_refunds() {
                let currency = state.currency().ok_or_else(|| ReactError("payment: no currency".into()))?;
                self.refund(event, id, &state, &key, Money::new(amount, currency)).await?;
            }
            return Ok(());
        }
        let key = match e {
            PaymentEvent::AuthorizationRequested { key }
            | PaymentEvent::CaptureRequested { key, .. }
            | PaymentEvent::VoidRequested { key, .. }
            | PaymentEvent::RefundRequested { key, .. } => key,
            _ => return Ok(()),
        };
        let state = self.payment(id).await?;
        if !state.pending.contains_key(key) {
            return Ok(());
        }
        let currency = state.currency().ok_or_else(|| ReactError("payment: no currency".into()))?;
        let outcome = match e {
            PaymentEvent::AuthorizationRequested { .. } => match self.authorize(&state, key).await? {
                Ok(intent) => intent_outcome(&intent, currency),
                Err(GatewayError::Refused { code, message }) => {
                    PaymentOutcome::AuthorizationFailed { code, reason: message }
                }
                Err(e @ GatewayError::Unavailable(_)) => return Err(fail(e)),
            },
            PaymentEvent::CaptureRequested { amount, final_capture, .. } => {
                let provider_ref = provider_ref(&state)?;
                match self.gateway.capture(key, &provider_ref, *amount, *final_capture).await {
                    Ok(_) => PaymentOutcome::Captured { key: key.clone(), amount: *amount },
                    Err(GatewayError::Refused { code, message }) => {
                        PaymentOutcome::CaptureFailed { key: key.clone(), reason: format!("{code}: {message}") }
                    }
                    Err(e) => return Err(fail(e)),
                }
            }
            PaymentEvent::VoidRequested { .. } => {
                // A void asked while the authorization was under way learns the intent from
                // the authorization's own key (the provider replays its answer).
                let provider_ref = match &state.provider_ref {
                    Some(r) => r.clone(),
                    None => {
                        let key = format!("{id}:authorize:1");
                        match self.authorize(&state, &key).await? {
                            Ok(intent) => intent.provider_ref,
                            Err(GatewayError::Refused { code, message }) => {
                                // Nothing was authorized: record the failure; the void is moot.
                                return self
                                    .answer(event, id, PaymentOutcome::AuthorizationFailed { code, reason: message })
                                    .await;
                            }
                            Err(e) => return Err(fail(e)),
                        }
                    }
                };
                match self.gateway.cancel(key, &provider_ref).await {
                    Ok(_) => PaymentOutcome::Voided {},
                    Err(GatewayError::Refused { code, message }) => {
                        PaymentOutcome::VoidFailed { reason: format!("{code}: {message}") }
                    }
                    Err(e) => return Err(fail(e)),
                }
            }
            PaymentEvent::RefundRequested { amount, .. } => {
                if !state.sendable_refunds().iter().any(|(k, _)| k == key) {
                    // Its capture is still under way: the capture's answer sends it.
                    return Ok(());
                }
                return self.refund(event, id, &state, key, *amount).await;
            }
            _ => return Ok(()),
        };
        self.answer(event, id, outcome).await
    }

    /// The provider let the authorization lapse: an order that has shipped nothing is
    /// cancelled (its stock released), one that has shipped part is put on hold, so that
    /// nothing more ships unpaid.
    async fn expired(&self, event: &RecordedEvent, id: &PaymentId) -> Result<(), ReactError> {
        let payment = self.payment(id).await?;
        let Some(order_id) = payment.order_id.clone() else { return Ok(()) };
        let order = self.order(&order_id).await?;
        // Only the intent the order was paid with matters, and only while the order waits to ship.
        if !order.payment.provider_refs.contains(id.as_str()) || order.status.is_terminal() || order.hold.is_some() {
            return Ok(());
        }
        let unshipped = order.lines.values().any(|l| l.shipped < l.ordered);
        if !unshipped {
            return Ok(());
        }
        let reason = format!("payment {id}: its authorization expired before the order shipped");
        let nothing_shipped = order.lines.values().all(|l| l.shipped == 0);
        let command = if nothing_shipped {
            Command::CancelOrder { order_id: order_id.clone(), reason }
        } else {
            Command::Order {
                order_id: order_id.clone(),
                command: orderlog_domain::order::OrderCommand::PlaceHold { reason },
            }
        };
        self.execute(event, &format!("expired:{order_id}"), command, &format!("order {order_id}")).await
    }

    /// Sends a pending refund and records the answer (a pending refund's webhook says how
    /// it ended).
    async fn refund(
        &self,
        event: &RecordedEvent,
        id: &PaymentId,
        state: &PaymentState,
        key: &str,
        amount: Money,
    ) -> Result<(), ReactError> {
        let provider_ref = provider_ref(state)?;
        let key = key.to_string();
        let outcome = match self.gateway.refund(&key, &provider_ref, amount).await {
            Ok(refund) if refund.status == "succeeded" => PaymentOutcome::Refunded {
                key: key.clone(),
                amount: Money::new(refund.amount, amount.currency),
                refund_ref: refund.refund_ref,
            },
            Ok(refund) if refund.status == "failed" || refund.status == "canceled" => {
                PaymentOutcome::RefundFailed { key: key.clone(), reason: format!("refund {}", refund.status) }
            }
            Ok(_) => return Ok(()),
            Err(GatewayError::Refused { code, message }) => {
                PaymentOutcome::RefundFailed { key: key.clone(), reason: format!("{code}: {message}") }
            }
            Err(e) => return Err(fail(e)),
        };
        let action = PaymentAction::Record { outcome, provider_event_id: None };
        self.send(event, &format!("answer:{key}"), id, action).await
    }

    /// The order as it was just after `version`: whether a shipment or a return completed
    /// the order is judged at its own event, not by what happened since.
    async fn order_at(&self, id: &OrderId, version: u64) -> Result<OrderState, ReactError> {
        let stream = StreamId::order(id).to_string();
        let mut state = OrderState::default();
        let mut from = 1;
        while from <= version {
            let limit = u32::try_from(version - from + 1).unwrap_or(u32::MAX).min(orderlog_store::READ_EVENTS_MAX);
            let page = self.service.store().read_stream(&stream, from, limit).await.map_err(fail)?;
            if page.is_empty() {
                break;
            }
            for recorded in &page {
                match DomainEvent::decode(&recorded.event_type, recorded.schema_version, &recorded.payload) {
                    Ok(DomainEvent::Order(e)) => state = orderlog_domain::order::Order::evolve(state, &e),
                    Ok(_) => return Err(ReactError(format!("{stream} holds an event that is not an order's"))),
                    Err(e) => return Err(fail(e)),
                }
                from = recorded.version + 1;
            }
        }
        Ok(state)
    }

    async fn on_order(&self, event: &RecordedEvent, order_id: &OrderId, e: &OrderEvent) -> Result<(), ReactError> {
        let order = match e {
            OrderEvent::LinesShipped { .. } | OrderEvent::ReturnReceived { .. } => {
                self.order_at(order_id, event.version).await?
            }
            _ => self.order(order_id).await?,
        };
        let Some(placed) = &order.placed else { return Ok(()) };
        let currency = placed.currency;
        match e {
            OrderEvent::LinesShipped { shipment_id, lines } => {
                let Some((id, payment)) = self.authorized_payment(&order).await? else { return Ok(()) };
                let everything_shipped = order.lines.values().all(|l| l.shipped >= l.ordered);
                let value = lines_value(placed, &lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect::<Vec<_>>());
                let amount = if everything_shipped { payment.capturable() } else { value.min(payment.capturable()) };
                if amount <= 0 {
                    return Ok(());
                }
                let command = PaymentCommand::RequestCapture {
                    amount: Money::new(amount, currency),
                    final_capture: everything_shipped,
                    reason: format!("shipment {shipment_id}"),
                };
                self.send(event, "capture", &id, PaymentAction::Command(command)).await
            }
            OrderEvent::OrderCancelled { .. } | OrderEvent::OrderExpired {} => {
                let reason = match e {
                    OrderEvent::OrderCancelled { reason } => format!("order cancelled: {reason}"),
                    _ => "order expired unpaid".to_string(),
                };
                for id in &order.payments {
                    let payment = self.payment(id).await?;
                    let command = if payment.status.is_terminal() || payment.void_pending() {
                        continue;
                    } else if payment.refundable() > 0 || payment.captured > 0 {
                        if payment.refundable() <= 0 {
                            continue;
                        }
                        let amount = Money::new(payment.refundable(), currency);
                        PaymentCommand::RequestRefund { amount, reason: reason.clone() }
                    } else {
                        PaymentCommand::RequestVoid { reason: reason.clone() }
                    };
                    self.send(event, "end", id, PaymentAction::Command(command)).await?;
                }
                Ok(())
            }
            OrderEvent::ReturnReceived { return_id, lines } => {
                let Some((id, payment)) = self.paid_payment(&order).await? else { return Ok(()) };
                let all_returned = order.lines.values().all(|l| l.returned >= l.ordered);
                let value = lines_value(placed, &lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect::<Vec<_>>());
                let amount = if all_returned { payment.refundable() } else { value.min(payment.refundable()) };
                if amount <= 0 {
                    return Ok(());
                }
                let command = PaymentCommand::RequestRefund {
                    amount: Money::new(amount, currency),
                    reason: format!("return {return_id}"),
                };
                self.send(event, "refund", &id, PaymentAction::Command(command)).await
            }
            _ => Ok(()),
        }
    }

    /// The order's intent that authorized it, if a provider's intent did.
    async fn authorized_payment(&self, order: &OrderState) -> Result<Option<(PaymentId, PaymentState)>, ReactError> {
        for id in order.payments.iter().rev() {
            if !order.payment.provider_refs.contains(id.as_str()) {
                continue;
            }
            let payment = self.payment(id).await?;
            if payment.status == PaymentStatus::Authorized {
                return Ok(Some((id.clone(), payment)));
            }
        }
        Ok(None)
    }

    /// The order's intent that is captured or being captured.
    async fn paid_payment(&self, order: &OrderState) -> Result<Option<(PaymentId, PaymentState)>, ReactError> {
        for id in order.payments.iter().rev() {
            let payment = self.payment(id).await?;
            if payment.refundable() > 0 || payment.captured > 0 {
                return Ok(Some((id.clone(), payment)));
            }
        }
        Ok(None)
    }
}

fn provider_ref(state: &PaymentState) -> Result<String, ReactError> {
    state.provider_ref.clone().ok_or_else(|| ReactError("payment: no provider reference yet".into()))
}

/// What an intent returned by an authorization says.
pub fn intent_outcome(intent: &Intent, currency: orderlog_domain::Currency) -> PaymentOutcome {
    match intent.status.as_str() {
        "requires_capture" | "succeeded" => PaymentOutcome::Authorized {
            provider_ref: intent.provider_ref.clone(),
            amount: Money::new(intent.amount, currency),
            capture_before: intent.capture_before,
        },
        "requires_action" => PaymentOutcome::ActionRequired {
            provider_ref: intent.provider_ref.clone(),
            next_action: intent.next_action.clone().unwrap_or_else(|| "unknown".into()),
        },
        other => PaymentOutcome::AuthorizationFailed {
            code: other.to_string(),
            reason: format!("the provider left the intent {other}"),
        },
    }
}

#[async_trait]
impl Reactor for PaymentProcess {
    fn name(&self) -> &'static str {
        self.name
    }

    fn on_park(&self) -> OnPark {
        OnPark::MoveOn
    }

    fn wants(&self, event: &RecordedEvent) -> bool {
        WANTED.contains(&event.event_type.as_str()) && self.only.as_ref().is_none_or(|o| event.stream_id.contains(o))
    }

    async fn react(&self, event: &RecordedEvent, decoded: &DomainEvent) -> Result<(), ReactError> {
        let stream = StreamId::parse(&event.stream_id)
            .ok_or_else(|| ReactError(format!("'{}' is not a stream id", event.stream_id)))?;
        match decoded {
            DomainEvent::Payment(e) => {
                let id = PaymentId::parse(stream.id()).map_err(|r| ReactError(r.reason))?;
                self.on_payment(event, &id, e).await
            }
            DomainEvent::Order(e) => {
                let id = stream.order_id().ok_or_else(|| ReactError("not an order's stream".into()))?;
                self.on_order(event, &id, e).await
            }
            _ => Ok(()),
        }
    }

    /// Streams concurrently, each stream's events in order; the first failure (in log
    /// order) is reported, and the runner takes it and what follows one by one (the effects
    /// of those that did succeed are idempotent).
    async fn react_batch(&self, events: &[(&RecordedEvent, DomainEvent)]) -> Result<(), (usize, ReactError)> {
        let mut by_stream: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, (event, _)) in events.iter().enumerate() {
            by_stream.entry(event.stream_id.as_str()).or_default().push(i);
        }
        let runs = by_stream.into_values().map(|indexes| async move {
            for i in indexes {
                let (event, decoded) = &events[i];
                self.react(event, decoded).await.map_err(|e| (i, e))?;
            }
            Ok::<(), (usize, ReactError)>(())
        });
        let failures = futures_util::future::join_all(runs).await.into_iter().filter_map(Result::err);
        match failures.min_by_key(|(i, _)| *i) {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }
}
