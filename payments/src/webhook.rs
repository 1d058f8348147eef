//! A provider's webhook, from raw bytes to a payment command: the signature over the raw
//! body and the timestamp's tolerance are checked before anything is parsed (a failure
//! stores nothing); the event then becomes an outcome on the intent its metadata names,
//! recorded under the command id `webhook:{provider}:{event id}` and the provider event
//! id, so a delivery seen before changes nothing.
//!
//! Events understood (Stripe's names): `payment_intent.amount_capturable_updated` (authorized),
//! `payment_intent.requires_action`, `payment_intent.payment_failed`,
//! `payment_intent.succeeded` (the amount received so far: captures it covers succeeded),
//! `payment_intent.canceled` (voided, or expired when orderlog asked no void),
//! `refund.created` / `refund.updated`, `charge.dispute.created` / `charge.dispute.closed`
//! (a dispute names only the PaymentIntent: [`ProviderRefs`] finds its payment).
//! Others are acknowledged and ignored, as a provider expects.

use orderlog_commands::{Command, CommandEnvelope, CommandError, CommandService};
use orderlog_domain::payment::{PaymentAction, PaymentOutcome};
use orderlog_domain::{Currency, Money, PaymentId};
use serde_json::Value;

use crate::gateway::Intent;
use crate::signature::{self, SignatureError};

/// Largest webhook body accepted.
pub const WEBHOOK_BYTES_MAX: usize = 256 * 1024;

/// What became of a webhook that verified.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Receipt {
    pub event_id: String,
    pub event_type: String,
    pub payment_id: Option<String>,
    /// `recorded`, `duplicate` (seen before), or `ignored` (with why).
    pub result: String,
    pub detail: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The delivery is not authentic or not fresh: 400, nothing stored.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// Authentic but unreadable: 400.
    #[error("webhook body: {0}")]
    Body(String),
    /// The log could not take it now: 5xx, the provider retries.
    #[error("{0}")]
    Unavailable(String),
}

/// Finds the payment a provider's reference (its intent id, `pi_…`) belongs to, for the
/// events that name only that (a dispute): orderlog's read model of payments.
#[async_trait::async_trait]
pub trait ProviderRefs: Send + Sync {
    async fn payment_of(&self, provider_ref: &str) -> Result<Option<String>, String>;
}

/// The payment an event is about: named by the metadata orderlog sent, or by the provider's
/// reference only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentRef {
    Id(PaymentId),
    Provider(String),
}

/// Verifies and records one delivery.
pub async fn receive(
    service: &CommandService,
    refs: Option<&dyn ProviderRefs>,
    provider: &str,
    secrets: &[&str],
    signature_header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<Receipt, WebhookError> {
    signature::verify(secrets, signature_header, body, now, signature::TOLERANCE_SECS)?;
    let event: Value = serde_json::from_slice(body).map_err(|e| WebhookError::Body(e.to_string()))?;
    let event_id = event["id"].as_str().ok_or_else(|| WebhookError::Body("no event id".into()))?.to_string();
    let event_type = event["type"].as_str().ok_or_else(|| WebhookError::Body("no event type".into()))?.to_string();
    let object = &event["data"]["object"];
    let receipt = |payment_id: Option<&PaymentId>, result: &str, detail: Option<String>| Receipt {
        event_id: event_id.clone(),
        event_type: event_type.clone(),
        payment_id: payment_id.map(|p| p.to_string()),
        result: result.to_string(),
        detail,
    };
    let (payment, outcome) = match outcome_of(&event_type, object) {
        Ok(Some(found)) => found,
        Ok(None) => {
            return Ok(receipt(None, "ignored", Some(format!("{event_type} is not an event orderlog acts on"))))
        }
        Err(why) => return Ok(receipt(None, "ignored", Some(why))),
    };
    let payment_id = match payment {
        PaymentRef::Id(id) => id,
        PaymentRef::Provider(provider_ref) => {
            let found = match refs {
                Some(refs) => refs.payment_of(&provider_ref).await.map_err(WebhookError::Unavailable)?,
                None => None,
            };
            match found.map(PaymentId::parse) {
                Some(Ok(id)) => id,
                _ => {
                    let why = format!("no payment of this server's has the provider reference {provider_ref}");
                    return Ok(receipt(None, "ignored", Some(why)));
                }
            }
        }
    };
    let action = PaymentAction::Record { outcome, provider_event_id: Some(event_id.clone()) };
    let command = Command::Payment { payment_id: payment_id.clone(), action };
    let envelope =
        CommandEnvelope::new(format!("webhook:{provider}:{event_id}"), format!("provider:{provider}"), command);
    match service.execute(envelope).await {
        Ok(outcome) if outcome.repeated || outcome.events_appended == 0 => {
            Ok(receipt(Some(&payment_id), "duplicate", None))
        }
        Ok(_) => Ok(receipt(Some(&payment_id), "recorded", None)),
        // Acknowledged so that the provider stops retrying, and kept in the answer: a
        // payment orderlog does not know, or an outcome its intent refuses.
        Err(CommandError::Rejected(r)) => Ok(receipt(Some(&payment_id), "ignored", Some(r.reason))),
        Err(CommandError::Invalid(reason)) => Ok(receipt(Some(&payment_id), "ignored", Some(reason))),
        Err(e) => Err(WebhookError::Unavailable(e.to_string())),
    }
}

fn money(object: &Value, field: &str) -> Result<Money, String> {
    let amount = object[field].as_i64().ok_or_else(|| format!("no {field}"))?;
    let currency = object["currency"].as_str().ok_or("no currency")?;
    let currency = Currency::parse(&currency.to_ascii_uppercase()).map_err(|r| r.reason)?;
    Ok(Money::new(amount, currency))
}

fn text(object: &Value, field: &str) -> Result<String, String> {
    object[field].as_str().map(str::to_string).ok_or_else(|| format!("no {field}"))
}

/// The intent a webhook object is about, by the metadata orderlog sent with it.
fn payment_of(metadata: &Value) -> Result<PaymentId, String> {
    let id = metadata["payment_id"].as_str().ok_or("no metadata.payment_id: not a payment orderlog made")?;
    PaymentId::parse(id).map_err(|r| r.reason)
}

/// The payment and outcome an event reports; `None` for an event orderlog does not act on.
pub fn outcome_of(event_type: &str, object: &Value) -> Result<Option<(PaymentRef, PaymentOutcome)>, String> {
    let intent_outcome = |object: &Value| -> Result<PaymentOutcome, String> {
        let amount = money(object, "amount")?;
        let intent = Intent {
            provider_ref: text(object, "id")?,
            status: text(object, "status")?,
            amount: amount.amount,
            amount_capturable: object["amount_capturable"].as_i64().unwrap_or(0),
            amount_received: object["amount_received"].as_i64().unwrap_or(0),
            capture_before: object["latest_charge"]["payment_method_details"]["card"]["capture_before"].as_i64(),
            next_action: object["next_action"]["type"].as_str().map(str::to_string),
        };
        Ok(crate::process::intent_outcome(&intent, amount.currency))
    };
    let outcome = match event_type {
        "payment_intent.amount_capturable_updated" | "payment_intent.requires_action" => {
            let outcome = intent_outcome(object)?;
            // After a partial capture the capturable amount changes again: that is news about
            // captures, which the capture's own answer and `succeeded` report.
            if object["amount_received"].as_i64().unwrap_or(0) > 0 {
                return Ok(None);
            }
            (PaymentRef::Id(payment_of(&object["metadata"])?), outcome)
        }
        "payment_intent.payment_failed" => {
            let error = &object["last_payment_error"];
            let code = error["decline_code"].as_str().or(error["code"].as_str()).unwrap_or("payment_failed");
            let reason = error["message"].as_str().unwrap_or("the provider reported the payment failed");
            let outcome = PaymentOutcome::AuthorizationFailed { code: code.to_string(), reason: reason.to_string() };
            (PaymentRef::Id(payment_of(&object["metadata"])?), outcome)
        }
        "payment_intent.succeeded" => {
            let total = money(object, "amount_received")?;
            (PaymentRef::Id(payment_of(&object["metadata"])?), PaymentOutcome::CapturedTotal { total })
        }
        "payment_intent.canceled" => {
            let outcome = match object["cancellation_reason"].as_str() {
                Some("automatic") => PaymentOutcome::AuthorizationExpired {},
                _ => PaymentOutcome::Voided {},
            };
            (PaymentRef::Id(payment_of(&object["metadata"])?), outcome)
        }
        "refund.created" | "refund.updated" => {
            let key = object["metadata"]["idempotency_key"].as_str().ok_or("no metadata.idempotency_key")?;
            let payment = key.rsplitn(3, ':').nth(2).ok_or("an idempotency key not orderlog's")?;
            let payment = PaymentId::parse(payment).map_err(|r| r.reason)?;
            let outcome = match object["status"].as_str() {
                Some("succeeded") => PaymentOutcome::Refunded {
                    key: key.to_string(),
                    amount: money(object, "amount")?,
                    refund_ref: text(object, "id")?,
                },
                Some("failed") | Some("canceled") => PaymentOutcome::RefundFailed {
                    key: key.to_string(),
                    reason: object["failure_reason"].as_str().unwrap_or("refund failed").to_string(),
                },
                _ => return Ok(None),
            };
            (PaymentRef::Id(payment), outcome)
        }
        "charge.dispute.created" => {
            let outcome = PaymentOutcome::DisputeOpened {
                dispute_ref: text(object, "id")?,
                amount: money(object, "amount")?,
                reason: text(object, "reason")?,
            };
            (PaymentRef::Provider(text(object, "payment_intent")?), outcome)
        }
        "charge.dispute.closed" => {
            let outcome =
                PaymentOutcome::DisputeClosed { dispute_ref: text(object, "id")?, status: text(object, "status")? };
            (PaymentRef::Provider(text(object, "payment_intent")?), outcome)
        }
        _ => return Ok(None),
    };
    Ok(Some(outcome))
}
