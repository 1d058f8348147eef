//! Payment intents as rows (read model `payment_status`, one row per intent) and the
//! payments report folded from them: per day the intent was started and currency, how many
//! were authorized, failed, voided and disputed, the money captured and refunded, and the
//! authorization success rate.

use std::collections::BTreeMap;

use chrono::{NaiveDate, SecondsFormat};
use orderlog_domain::codec::DomainEvent;
use orderlog_domain::payment::PaymentEvent;
use orderlog_domain::{AggregateKind, StreamId};
use orderlog_store::RecordedEvent;
use serde::{Deserialize, Serialize};

use crate::table::TableModel;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRow {
    pub payment_id: String,
    pub order_id: String,
    pub currency: String,
    pub amount: i64,
    /// `authorizing`, `requires_action`, `authorized`, `failed`, `voided` or `expired`.
    pub status: String,
    /// The provider's id of the intent (`pi_…`), once it answered.
    #[serde(default)]
    pub provider_ref: Option<String>,
    pub authorized: i64,
    pub captured: i64,
    pub refunded: i64,
    pub disputes: u32,
    pub failure: Option<String>,
    /// When the intent was started (RFC 3339, UTC).
    pub initiated_at: String,
}

pub struct PaymentStatusTable;

impl TableModel for PaymentStatusTable {
    const NAME: &'static str = "payment_status";
    const VERSION: u32 = 1;
    type Row = PaymentRow;

    fn wants(event: &RecordedEvent) -> bool {
        StreamId::kind_of(&event.stream_id) == Some(AggregateKind::Payment)
    }

    fn keys(event: &RecordedEvent, decoded: &DomainEvent) -> Vec<String> {
        match (decoded, StreamId::parse(&event.stream_id)) {
            (DomainEvent::Payment(_), Some(stream)) => vec![stream.id().to_string()],
            _ => vec![],
        }
    }

    fn evolve(mut row: PaymentRow, key: &str, event: &RecordedEvent, decoded: &DomainEvent) -> PaymentRow {
        let DomainEvent::Payment(e) = decoded else { return row };
        row.payment_id = key.to_string();
        match e {
            PaymentEvent::PaymentInitiated { order_id, amount, .. } => {
                row.order_id = order_id.to_string();
                row.currency = amount.currency.code().to_string();
                row.amount = amount.amount;
                row.initiated_at = event.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true);
                row.status = "authorizing".into();
            }
            PaymentEvent::PaymentActionRequired { provider_ref, .. } => {
                row.provider_ref = Some(provider_ref.clone());
                row.status = "requires_action".into();
            }
            PaymentEvent::IntentAuthorized { amount, provider_ref, .. } => {
                row.provider_ref = Some(provider_ref.clone());
                row.authorized = amount.amount;
                row.status = "authorized".into();
            }
            PaymentEvent::AuthorizationFailed { code, reason } => {
                row.failure = Some(format!("{code}: {reason}"));
                row.status = "failed".into();
            }
            PaymentEvent::IntentCaptured { amount, .. } => row.captured = row.captured.saturating_add(amount.amount),
            PaymentEvent::IntentRefunded { amount, .. } => row.refunded = row.refunded.saturating_add(amount.amount),
            PaymentEvent::IntentVoided { .. } => row.status = "voided".into(),
            PaymentEvent::AuthorizationExpired {} => row.status = "expired".into(),
            PaymentEvent::DisputeOpened { .. } => row.disputes = row.disputes.saturating_add(1),
            PaymentEvent::AuthorizationRequested { .. }
            | PaymentEvent::CaptureRequested { .. }
            | PaymentEvent::CaptureFailed { .. }
            | PaymentEvent::VoidRequested { .. }
            | PaymentEvent::VoidFailed { .. }
            | PaymentEvent::RefundRequested { .. }
            | PaymentEvent::RefundFailed { .. }
            | PaymentEvent::DisputeClosed { .. }
            | PaymentEvent::ProviderEventReceived { .. } => {}
        }
        row
    }
}

/// Payments of one day and currency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaymentsDay {
    pub day: String,
    pub currency: String,
    /// Intents started that day.
    pub intents: i64,
    /// Intents that were authorized (whatever became of them after).
    pub authorized: i64,
    pub authorized_amount: i128,
    pub captured: i128,
    pub refunded: i128,
    pub voided: i64,
    pub failed: i64,
    /// Intents with at least one dispute.
    pub disputed: i64,
    /// Authorized / (authorized + failed); intents still waiting count in neither.
    pub authorization_success_rate: Option<f64>,
}

/// Folds payment rows into [`PaymentsDay`]s, days from `first` to `last`.
#[derive(Default)]
pub struct PaymentsFold {
    days: BTreeMap<(String, String), PaymentsDay>,
}

impl PaymentsFold {
    pub fn add(&mut self, row: &PaymentRow, first: NaiveDate, last: NaiveDate, currency: Option<&str>) {
        let Some(day) = row.initiated_at.get(..10).and_then(|d| d.parse::<NaiveDate>().ok()) else { return };
        if day < first || day > last || currency.is_some_and(|c| c != row.currency) {
            return;
        }
        let entry = self.days.entry((day.to_string(), row.currency.clone())).or_insert_with(|| PaymentsDay {
            day: day.to_string(),
            currency: row.currency.clone(),
            intents: 0,
            authorized: 0,
            authorized_amount: 0,
            captured: 0,
            refunded: 0,
            voided: 0,
            failed: 0,
            disputed: 0,
            authorization_success_rate: None,
        });
        entry.intents += 1;
        if row.authorized > 0 {
            entry.authorized += 1;
            entry.authorized_amount += i128::from(row.authorized);
        }
        entry.captured += i128::from(row.captured);
        entry.refunded += i128::from(row.refunded);
        entry.voided += i64::from(matches!(row.status.as_str(), "voided" | "expired"));
        entry.failed += i64::from(row.status == "failed");
        entry.disputed += i64::from(row.disputes > 0);
    }

    pub fn finish(self) -> Vec<PaymentsDay> {
        self.days
            .into_values()
            .map(|mut d| {
                let decided = d.authorized + d.failed;
                d.authorization_success_rate = (decided > 0).then(|| d.authorized as f64 / decided as f64);
                d
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(day: &str, status: &str, authorized: i64, captured: i64, refunded: i64) -> PaymentRow {
        PaymentRow {
            payment_id: format!("p-{day}-{status}"),
            currency: "EUR".into(),
            status: status.into(),
            authorized,
            captured,
            refunded,
            initiated_at: format!("{day}T10:00:00Z"),
            ..PaymentRow::default()
        }
    }

    #[test]
    fn a_day_counts_outcomes_and_the_success_rate_leaves_out_intents_still_waiting() {
        let (first, last) = ("2026-03-01".parse().unwrap(), "2026-03-02".parse().unwrap());
        let mut fold = PaymentsFold::default();
        for r in [
            row("2026-03-01", "authorized", 1_000, 1_000, 200),
            row("2026-03-01", "voided", 500, 0, 0),
            row("2026-03-01", "failed", 0, 0, 0),
            row("2026-03-01", "authorizing", 0, 0, 0),
            row("2026-03-03", "authorized", 9_000, 0, 0),
        ] {
            fold.add(&r, first, last, None);
        }
        let days = fold.finish();
        assert_eq!(days.len(), 1, "the 3rd is outside the range");
        let d = &days[0];
        assert_eq!((d.intents, d.authorized, d.failed, d.voided), (4, 2, 1, 1));
        assert_eq!((d.authorized_amount, d.captured, d.refunded), (1_500, 1_000, 200));
        assert_eq!(d.authorization_success_rate, Some(2.0 / 3.0));
    }
}
