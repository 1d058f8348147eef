//! The order-status read model: one row per order with its state, payment and fulfilment
//! status (derived here, not stored twice in the log), lines, totals, customer, milestone
//! times and timeline.

use chrono::SecondsFormat;
use orderlog_domain::cart::Customer;
use orderlog_domain::codec::DomainEvent;
use orderlog_domain::order::{OrderEvent, OrderStatus};
use orderlog_domain::{AggregateKind, StreamId};
use orderlog_store::RecordedEvent;
use serde::{Deserialize, Serialize};

use crate::table::TableModel;

/// One line of an order and how far it got.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLineRow {
    pub sku: String,
    pub location: String,
    pub quantity: u32,
    pub unit_price: i64,
    /// What promotions took off the line.
    #[serde(default)]
    pub discount: i64,
    /// The line's tax (included in its price or added on top).
    #[serde(default)]
    pub tax: i64,
    pub shipped: u32,
    pub delivered: u32,
    pub returned: u32,
}

/// A promotion an order used and what it took off.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionRow {
    pub code: String,
    pub discount: i64,
}

/// One event in an order's timeline.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub position: u64,
    pub at: String,
    pub event_type: String,
    pub actor: String,
}

/// One order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderStatusRow {
    pub order_id: String,
    /// The order's lifecycle state (`placed`, `confirmed`, … `cancelled`, `expired`).
    pub state: String,
    /// `pending`, `failed`, `authorized`, `partially_captured`, `captured`,
    /// `partially_refunded`, `refunded` or `voided`.
    pub payment_status: String,
    /// `unfulfilled`, `on_hold`, `partially_shipped`, `shipped`, `partially_delivered` or
    /// `delivered`.
    pub fulfilment_status: String,
    /// Why the order is on hold, while it is (it does not ship until the hold is released).
    #[serde(default)]
    pub hold: Option<String>,
    /// The customer id, or `guest`.
    pub customer: String,
    pub email: String,
    pub currency: String,
    pub lines: Vec<OrderLineRow>,
    pub subtotal: i64,
    pub discount: i64,
    pub shipping: i64,
    pub tax: i64,
    /// The part of `tax` that tax-inclusive prices held.
    #[serde(default)]
    pub tax_included: i64,
    pub total: i64,
    /// What each promotion took off.
    #[serde(default)]
    pub promotions: Vec<PromotionRow>,
    pub authorized: i64,
    pub captured: i64,
    pub refunded: i64,
    pub voided: bool,
    pub payment_failures: u32,
    pub placed_at: Option<String>,
    pub confirmed_at: Option<String>,
    pub shipped_at: Option<String>,
    pub delivered_at: Option<String>,
    pub completed_at: Option<String>,
    pub cancelled_at: Option<String>,
    /// When the return window after delivery closed (returns are refused from then on).
    #[serde(default)]
    pub return_window_closed_at: Option<String>,
    pub timeline: Vec<TimelineEntry>,
}

fn state_name(status: OrderStatus) -> String {
    status.as_str().to_string()
}

/// Replaces `field` only when it differs (derived statuses rarely change per event).
fn set(field: &mut String, value: &str) {
    if field != value {
        value.clone_into(field);
    }
}

impl OrderStatusRow {
    fn derive(&mut self) {
        let payment_status = if self.voided {
            "voided"
        } else if self.refunded > 0 && self.refunded >= self.captured {
            "refunded"
        } else if self.refunded > 0 {
            "partially_refunded"
        } else if self.captured > 0 && self.captured >= self.authorized {
            "captured"
        } else if self.captured > 0 {
            "partially_captured"
        } else if self.authorized > 0 {
            "authorized"
        } else if self.payment_failures > 0 {
            "failed"
        } else {
            "pending"
        };
        set(&mut self.payment_status, payment_status);
        let all = |f: fn(&OrderLineRow) -> bool| !self.lines.is_empty() && self.lines.iter().all(f);
        let any = |f: fn(&OrderLineRow) -> bool| self.lines.iter().any(f);
        let fulfilment_status = if all(|l| l.delivered == l.quantity) {
            "delivered"
        } else if any(|l| l.delivered > 0) {
            "partially_delivered"
        } else if all(|l| l.shipped == l.quantity) {
            "shipped"
        } else if self.hold.is_some() {
            "on_hold"
        } else if any(|l| l.shipped > 0) {
            "partially_shipped"
        } else {
            "unfulfilled"
        };
        set(&mut self.fulfilment_status, fulfilment_status);
    }

    fn line(&mut self, sku: &str) -> Option<&mut OrderLineRow> {
        self.lines.iter_mut().find(|l| l.sku == sku)
    }
}

/// Order status as rows, one per order (key: the order id).
pub struct OrderStatusTable;

/// Plain-SQL views of the order-status table for SQLite readers.
pub const ORDER_VIEWS_SQLITE: &[&str] = &[
    "DROP VIEW IF EXISTS order_status; CREATE VIEW order_status AS
       SELECT key AS order_id, json_extract(data, '$.state') AS state,
              json_extract(data, '$.payment_status') AS payment_status,
              json_extract(data, '$.fulfilment_status') AS fulfilment_status, json_extract(data, '$.hold') AS hold,
              json_extract(data, '$.customer') AS customer, json_extract(data, '$.email') AS email,
              json_extract(data, '$.currency') AS currency, json_extract(data, '$.total') AS total,
              json_extract(data, '$.subtotal') AS subtotal, json_extract(data, '$.discount') AS discount,
              json_extract(data, '$.shipping') AS shipping, json_extract(data, '$.tax') AS tax,
              COALESCE(json_extract(data, '$.tax_included'), 0) AS tax_included,
              json_extract(data, '$.promotions') AS promotions,
              json_extract(data, '$.captured') AS captured, json_extract(data, '$.refunded') AS refunded,
              json_extract(data, '$.placed_at') AS placed_at, json_extract(data, '$.confirmed_at') AS confirmed_at,
              json_extract(data, '$.shipped_at') AS shipped_at, json_extract(data, '$.delivered_at') AS delivered_at,
              json_extract(data, '$.lines') AS lines, json_extract(data, '$.timeline') AS timeline
         FROM rm_order_status",
    // Sales per day of placement and currency. Gross and net count orders not cancelled or
    // expired; refunds are those of the day's orders; the median is over orders shipped.
    // SQLite's SUM refuses a sum past 64 bits ("integer overflow"); the HTTP reports fold
    // the rows in 128 bits instead (`reports`), and PostgreSQL's views sum in NUMERIC.
    "DROP VIEW IF EXISTS sales_by_day; CREATE VIEW sales_by_day AS
       WITH o AS (
         SELECT date(placed_at) AS day, currency, total, discount, tax, shipping, refunded, state,
                (SELECT COALESCE(SUM(json_extract(l.value, '$.quantity')), 0) FROM json_each(lines) l) AS units,
                CASE WHEN shipped_at IS NOT NULL
                     THEN (julianday(shipped_at) - julianday(placed_at)) * 86400.0 END AS ship_seconds
           FROM order_status WHERE placed_at IS NOT NULL),
       ranked AS (
         SELECT day, currency, ship_seconds,
                row_number() OVER (PARTITION BY day, currency ORDER BY ship_seconds) AS n,
                count(*) OVER (PARTITION BY day, currency) AS shipped
           FROM o WHERE ship_seconds IS NOT NULL),
       median AS (
         SELECT day, currency, avg(ship_seconds) AS seconds FROM ranked
          WHERE n IN ((shipped + 1) / 2, (shipped + 2) / 2) GROUP BY day, currency)
       SELECT o.day, o.currency, count(*) AS orders,
              SUM(CASE WHEN state NOT IN ('cancelled', 'expired') THEN units ELSE 0 END) AS units,
              SUM(CASE WHEN state NOT IN ('cancelled', 'expired') THEN total ELSE 0 END) AS gross,
              SUM(CASE WHEN state NOT IN ('cancelled', 'expired') THEN discount ELSE 0 END) AS discounts,
              SUM(CASE WHEN state NOT IN ('cancelled', 'expired') THEN tax ELSE 0 END) AS tax,
              SUM(CASE WHEN state NOT IN ('cancelled', 'expired') THEN shipping ELSE 0 END) AS shipping,
              SUM(refunded) AS refunds,
              SUM(CASE WHEN state NOT IN ('cancelled', 'expired') THEN total ELSE 0 END) - SUM(refunded) AS net,
              SUM(CASE WHEN state NOT IN ('cancelled', 'expired') THEN total ELSE 0 END)
                / MAX(SUM(CASE WHEN state NOT IN ('cancelled', 'expired') THEN 1 ELSE 0 END), 1) AS average_order_value,
              AVG(CASE WHEN state = 'cancelled' THEN 1.0 ELSE 0.0 END) AS cancellation_rate,
              median.seconds AS median_seconds_to_ship
         FROM o LEFT JOIN median ON median.day = o.day AND median.currency = o.currency
        GROUP BY o.day, o.currency",
    "DROP VIEW IF EXISTS top_skus; CREATE VIEW top_skus AS
       SELECT json_extract(l.value, '$.sku') AS sku, o.currency,
              SUM(json_extract(l.value, '$.quantity')) AS units,
              SUM(json_extract(l.value, '$.quantity') * json_extract(l.value, '$.unit_price')) AS revenue
         FROM order_status o, json_each(o.lines) l
        WHERE o.state NOT IN ('cancelled', 'expired')
        GROUP BY 1, 2",
    "DROP VIEW IF EXISTS top_promotions; CREATE VIEW top_promotions AS
       SELECT json_extract(p.value, '$.code') AS code, o.currency, count(*) AS uses,
              SUM(json_extract(p.value, '$.discount')) AS discount
         FROM order_status o, json_each(o.promotions) p
        WHERE o.state NOT IN ('cancelled', 'expired')
        GROUP BY 1, 2",
];

/// Plain-SQL views of the order-status table for PostgreSQL readers.
pub const ORDER_VIEWS_POSTGRES: &[&str] = &[
    "DROP VIEW IF EXISTS order_status CASCADE; CREATE VIEW order_status AS
       SELECT key AS order_id, data->>'state' AS state, data->>'payment_status' AS payment_status,
              data->>'fulfilment_status' AS fulfilment_status, data->>'hold' AS hold, data->>'customer' AS customer,
              data->>'email' AS email, data->>'currency' AS currency, (data->>'total')::bigint AS total,
              (data->>'subtotal')::bigint AS subtotal, (data->>'discount')::bigint AS discount,
              (data->>'shipping')::bigint AS shipping, (data->>'tax')::bigint AS tax,
              COALESCE((data->>'tax_included')::bigint, 0) AS tax_included,
              COALESCE(data->'promotions', '[]'::jsonb) AS promotions,
              (data->>'captured')::bigint AS captured, (data->>'refunded')::bigint AS refunded,
              (data->>'placed_at')::timestamptz AS placed_at, (data->>'confirmed_at')::timestamptz AS confirmed_at,
              (data->>'shipped_at')::timestamptz AS shipped_at, (data->>'delivered_at')::timestamptz AS delivered_at,
              data->'lines' AS lines, data->'timeline' AS timeline
         FROM rm_order_status",
    "DROP VIEW IF EXISTS sales_by_day CASCADE; CREATE VIEW sales_by_day AS
       WITH o AS (
         SELECT (placed_at AT TIME ZONE 'UTC')::date AS day, currency, total, discount, tax, shipping, refunded, state,
                (SELECT COALESCE(SUM((l->>'quantity')::bigint), 0) FROM jsonb_array_elements(lines) l) AS units,
                EXTRACT(EPOCH FROM shipped_at - placed_at)::float8 AS ship_seconds,
                state NOT IN ('cancelled', 'expired') AS kept
           FROM order_status WHERE placed_at IS NOT NULL)
       SELECT day, currency, count(*) AS orders,
              COALESCE(SUM(units) FILTER (WHERE kept), 0)::numeric AS units,
              COALESCE(SUM(total) FILTER (WHERE kept), 0)::numeric AS gross,
              COALESCE(SUM(discount) FILTER (WHERE kept), 0)::numeric AS discounts,
              COALESCE(SUM(tax) FILTER (WHERE kept), 0)::numeric AS tax,
              COALESCE(SUM(shipping) FILTER (WHERE kept), 0)::numeric AS shipping,
              SUM(refunded)::numeric AS refunds,
              (COALESCE(SUM(total) FILTER (WHERE kept), 0) - SUM(refunded))::numeric AS net,
              div(COALESCE(SUM(total) FILTER (WHERE kept), 0), GREATEST(count(*) FILTER (WHERE kept), 1))
                AS average_order_value,
              AVG(CASE WHEN state = 'cancelled' THEN 1.0 ELSE 0.0 END)::float8 AS cancellation_rate,
              percentile_cont(0.5) WITHIN GROUP (ORDER BY ship_seconds) AS median_seconds_to_ship
         FROM o GROUP BY day, currency",
    "DROP VIEW IF EXISTS top_skus CASCADE; CREATE VIEW top_skus AS
       SELECT l->>'sku' AS sku, o.currency, SUM((l->>'quantity')::bigint)::numeric AS units,
              SUM((l->>'quantity')::numeric * (l->>'unit_price')::numeric) AS revenue
         FROM order_status o, jsonb_array_elements(o.lines) l
        WHERE o.state NOT IN ('cancelled', 'expired')
        GROUP BY 1, 2",
    "DROP VIEW IF EXISTS top_promotions CASCADE; CREATE VIEW top_promotions AS
       SELECT p->>'code' AS code, o.currency, count(*)::bigint AS uses,
              SUM((p->>'discount')::numeric) AS discount
         FROM order_status o, jsonb_array_elements(o.promotions) p
        WHERE o.state NOT IN ('cancelled', 'expired')
        GROUP BY 1, 2",
];

impl TableModel for OrderStatusTable {
    const NAME: &'static str = "order_status";
    const VERSION: u32 = 1;
    type Row = OrderStatusRow;

    fn wants(event: &RecordedEvent) -> bool {
        StreamId::kind_of(&event.stream_id) == Some(AggregateKind::Order)
    }

    fn keys(event: &RecordedEvent, decoded: &DomainEvent) -> Vec<String> {
        match (decoded, StreamId::parse(&event.stream_id)) {
            (DomainEvent::Order(_), Some(stream)) if stream.kind() == AggregateKind::Order => {
                vec![stream.id().to_string()]
            }
            _ => Vec::new(),
        }
    }

    fn evolve(mut row: OrderStatusRow, key: &str, event: &RecordedEvent, decoded: &DomainEvent) -> OrderStatusRow {
        let DomainEvent::Order(order_event) = decoded else { return row };
        let at = event.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true);
        row.order_id = key.to_string();
        match order_event {
            OrderEvent::OrderPlaced { order } => {
                row.state = state_name(OrderStatus::Placed);
                (row.customer, row.email) = match &order.customer {
                    Customer::Registered { customer_id, .. } => (customer_id.to_string(), order.email.clone()),
                    Customer::Guest { .. } => ("guest".to_string(), order.email.clone()),
                };
                row.currency = order.currency.code().to_string();
                row.lines = order
                    .lines
                    .iter()
                    .map(|l| OrderLineRow {
                        sku: l.sku.to_string(),
                        location: l.location.to_string(),
                        quantity: l.quantity,
                        unit_price: l.unit_price.amount,
                        discount: l.discount.map_or(0, |d| d.amount),
                        tax: l.tax.as_ref().map_or(0, |t| t.tax.amount),
                        ..OrderLineRow::default()
                    })
                    .collect();
                let t = &order.totals;
                (row.subtotal, row.discount, row.shipping, row.tax, row.total) =
                    (t.subtotal.amount, t.discount.amount, t.shipping.amount, t.tax.amount, t.total.amount);
                row.tax_included = t.tax_included.map_or(0, |m| m.amount);
                row.promotions = order
                    .promotions
                    .iter()
                    .map(|p| PromotionRow { code: p.code.clone(), discount: p.discount.amount })
                    .collect();
                // An order from before promotions were the server's names its code alone.
                if row.promotions.is_empty() {
                    if let Some(code) = &order.discount_code {
                        row.promotions.push(PromotionRow { code: code.clone(), discount: t.discount.amount });
                    }
                }
                row.placed_at = Some(at.clone());
            }
            OrderEvent::PaymentAuthorized { amount, .. } => {
                row.authorized = amount.amount;
                row.voided = false;
            }
            OrderEvent::OrderConfirmed {} => {
                row.state = state_name(OrderStatus::Confirmed);
                row.confirmed_at = Some(at.clone());
            }
            OrderEvent::PaymentCaptured { amount, .. } => row.captured = row.captured.saturating_add(amount.amount),
            OrderEvent::PaymentVoided { .. } => row.voided = true,
            OrderEvent::PaymentRefunded { amount, .. } => row.refunded = row.refunded.saturating_add(amount.amount),
            OrderEvent::PaymentFailed { .. } => row.payment_failures = row.payment_failures.saturating_add(1),
            OrderEvent::LinesShipped { lines, .. } => {
                for l in lines {
                    if let Some(line) = row.line(l.sku.as_str()) {
                        line.shipped = line.shipped.saturating_add(l.quantity);
                    }
                }
                let all_shipped = row.lines.iter().all(|l| l.shipped == l.quantity);
                row.state = state_name(if all_shipped { OrderStatus::Shipped } else { OrderStatus::PartiallyShipped });
                if all_shipped {
                    row.shipped_at = Some(at.clone());
                }
            }
            OrderEvent::LinesDelivered { lines, .. } => {
                for l in lines {
                    if let Some(line) = row.line(l.sku.as_str()) {
                        line.delivered = line.delivered.saturating_add(l.quantity);
                    }
                }
                if row.lines.iter().all(|l| l.delivered == l.quantity) {
                    row.state = state_name(OrderStatus::Delivered);
                    row.delivered_at = Some(at.clone());
                }
            }
            OrderEvent::OrderHeld { reason } => row.hold = Some(reason.clone()),
            OrderEvent::HoldReleased {} => row.hold = None,
            OrderEvent::OrderCompleted {} => {
                row.state = state_name(OrderStatus::Completed);
                row.completed_at = Some(at.clone());
            }
            OrderEvent::OrderCancelled { .. } => {
                row.state = state_name(OrderStatus::Cancelled);
                row.cancelled_at = Some(at.clone());
            }
            OrderEvent::OrderExpired {} => row.state = state_name(OrderStatus::Expired),
            OrderEvent::ReturnWindowClosed {} => row.return_window_closed_at = Some(at.clone()),
            // The intent's own stream tells how it goes; the row shows the order's payment.
            OrderEvent::OrderPaymentStarted { .. } => {}
            OrderEvent::ReturnRequested { .. } => {}
            OrderEvent::ReturnReceived { lines, .. } => {
                for l in lines {
                    if let Some(line) = row.line(l.sku.as_str()) {
                        line.returned = line.returned.saturating_add(l.quantity);
                    }
                }
            }
        }
        row.timeline.push(TimelineEntry {
            position: event.position,
            at,
            event_type: event.event_type.clone(),
            actor: event.metadata.actor.clone(),
        });
        row.derive();
        row
    }
}
