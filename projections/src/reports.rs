//! The reports (sales per day, best-selling SKUs) and, for SQLite, their folds from order
//! rows in `i128`: every amount a row can hold is an `i64`, so no sum of them can overflow,
//! and no stored value can make a report unreadable. (SQLite's `SUM` refuses a sum past 64
//! bits; on PostgreSQL the views `sales_by_day` and `top_skus` sum in NUMERIC and are read
//! as they are.)

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::orders::OrderStatusRow;

/// Sales of one day and currency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SalesDay {
    pub day: String,
    pub currency: String,
    pub orders: i64,
    pub units: i128,
    pub gross: i128,
    pub discounts: i128,
    /// Tax on the day's orders (inside their prices or added on top).
    pub tax: i128,
    /// Shipping charged before discounts.
    pub shipping: i128,
    pub refunds: i128,
    pub net: i128,
    pub average_order_value: i128,
    pub cancellation_rate: f64,
    pub median_seconds_to_ship: Option<f64>,
}

/// Uses and discount given of one promotion in one currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopPromotion {
    pub code: String,
    pub currency: String,
    /// Orders (not cancelled or expired) that used it.
    pub uses: i64,
    /// What it took off them in all.
    pub discount: i128,
}

/// Units and revenue of one SKU in one currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopSku {
    pub sku: String,
    pub currency: String,
    pub units: i128,
    pub revenue: i128,
}

fn kept(row: &OrderStatusRow) -> bool {
    !matches!(row.state.as_str(), "cancelled" | "expired")
}

fn utc(at: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(at).ok().map(|t| t.with_timezone(&Utc))
}

#[derive(Default)]
struct DayTotals {
    orders: i64,
    kept: i64,
    cancelled: i64,
    units: i128,
    gross: i128,
    discounts: i128,
    tax: i128,
    shipping: i128,
    refunds: i128,
    ship_seconds: Vec<f64>,
}

/// Folds order rows into sales per day of placement (UTC) and currency. Gross, discounts
/// and units count orders not cancelled or expired; refunds are those of the day's orders;
/// the median is over the orders shipped.
#[derive(Default)]
pub struct SalesFold {
    days: BTreeMap<(NaiveDate, String), DayTotals>,
}

impl SalesFold {
    pub fn add(&mut self, row: &OrderStatusRow, from: NaiveDate, to: NaiveDate, currency: Option<&str>) {
        let Some(placed) = row.placed_at.as_deref().and_then(utc) else { return };
        let day = placed.date_naive();
        if day < from || day > to || currency.is_some_and(|c| c != row.currency) {
            return;
        }
        let t = self.days.entry((day, row.currency.clone())).or_default();
        t.orders += 1;
        t.refunds += i128::from(row.refunded);
        if row.state == "cancelled" {
            t.cancelled += 1;
        }
        if kept(row) {
            t.kept += 1;
            t.units += row.lines.iter().map(|l| i128::from(l.quantity)).sum::<i128>();
            t.gross += i128::from(row.total);
            t.discounts += i128::from(row.discount);
            t.tax += i128::from(row.tax);
            t.shipping += i128::from(row.shipping);
        }
        if let Some(shipped) = row.shipped_at.as_deref().and_then(utc) {
            t.ship_seconds.push((shipped - placed).num_milliseconds() as f64 / 1_000.0);
        }
    }

    pub fn finish(self) -> Vec<SalesDay> {
        self.days
            .into_iter()
            .map(|((day, currency), mut t)| {
                t.ship_seconds.sort_by(f64::total_cmp);
                let n = t.ship_seconds.len();
                let median = (n > 0).then(|| (t.ship_seconds[(n - 1) / 2] + t.ship_seconds[n / 2]) / 2.0);
                SalesDay {
                    day: day.to_string(),
                    currency,
                    orders: t.orders,
                    units: t.units,
                    gross: t.gross,
                    discounts: t.discounts,
                    tax: t.tax,
                    shipping: t.shipping,
                    refunds: t.refunds,
                    net: t.gross - t.refunds,
                    average_order_value: t.gross / i128::from(t.kept.max(1)),
                    cancellation_rate: t.cancelled as f64 / t.orders as f64,
                    median_seconds_to_ship: median,
                }
            })
            .collect()
    }
}

/// Folds order rows into units and revenue per SKU and currency, over orders not cancelled
/// or expired.
#[derive(Default)]
pub struct TopSkuFold {
    skus: BTreeMap<(String, String), (i128, i128)>,
}

impl TopSkuFold {
    pub fn add(&mut self, row: &OrderStatusRow, currency: Option<&str>) {
        if !kept(row) || row.placed_at.is_none() || currency.is_some_and(|c| c != row.currency) {
            return;
        }
        for line in &row.lines {
            let (units, revenue) = self.skus.entry((line.sku.clone(), row.currency.clone())).or_default();
            *units += i128::from(line.quantity);
            *revenue += i128::from(line.quantity) * i128::from(line.unit_price);
        }
    }

    /// The first `limit` by units, then revenue, then SKU.
    pub fn finish(self, limit: u32) -> Vec<TopSku> {
        let mut top: Vec<TopSku> = self
            .skus
            .into_iter()
            .map(|((sku, currency), (units, revenue))| TopSku { sku, currency, units, revenue })
            .collect();
        top.sort_by(|a, b| b.units.cmp(&a.units).then(b.revenue.cmp(&a.revenue)).then(a.sku.cmp(&b.sku)));
        top.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        top
    }
}

/// Folds order rows into uses and discount per promotion and currency, over orders not
/// cancelled or expired.
#[derive(Default)]
pub struct TopPromotionFold {
    promotions: BTreeMap<(String, String), (i64, i128)>,
}

impl TopPromotionFold {
    pub fn add(&mut self, row: &OrderStatusRow, currency: Option<&str>) {
        if !kept(row) || row.placed_at.is_none() || currency.is_some_and(|c| c != row.currency) {
            return;
        }
        for p in &row.promotions {
            let (uses, discount) = self.promotions.entry((p.code.clone(), row.currency.clone())).or_default();
            *uses += 1;
            *discount += i128::from(p.discount);
        }
    }

    /// The first `limit` by uses, then discount, then code.
    pub fn finish(self, limit: u32) -> Vec<TopPromotion> {
        let mut top: Vec<TopPromotion> = self
            .promotions
            .into_iter()
            .map(|((code, currency), (uses, discount))| TopPromotion { code, currency, uses, discount })
            .collect();
        top.sort_by(|a, b| b.uses.cmp(&a.uses).then(b.discount.cmp(&a.discount)).then(a.code.cmp(&b.code)));
        top.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        top
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::OrderLineRow;

    fn row(id: &str, state: &str, total: i64, refunded: i64, quantity: u32, unit_price: i64) -> OrderStatusRow {
        OrderStatusRow {
            order_id: id.into(),
            state: state.into(),
            currency: "EUR".into(),
            total,
            refunded,
            placed_at: Some("2026-11-03T10:00:00Z".into()),
            lines: vec![OrderLineRow { sku: "mug".into(), quantity, unit_price, ..OrderLineRow::default() }],
            ..OrderStatusRow::default()
        }
    }

    #[test]
    fn sums_past_i64_are_exact() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 3).unwrap();
        let mut sales = SalesFold::default();
        let mut top = TopSkuFold::default();
        for r in [
            row("a", "placed", i64::MAX, i64::MIN, u32::MAX, i64::MAX),
            row("b", "placed", i64::MAX, 0, u32::MAX, i64::MAX),
        ] {
            sales.add(&r, day, day, None);
            top.add(&r, None);
        }
        let s = &sales.finish()[0];
        assert_eq!(s.gross, 2 * i128::from(i64::MAX));
        assert_eq!(s.net, 2 * i128::from(i64::MAX) - i128::from(i64::MIN));
        assert_eq!(s.average_order_value, i128::from(i64::MAX));
        let t = &top.finish(10)[0];
        assert_eq!(t.revenue, 2 * i128::from(u32::MAX) * i128::from(i64::MAX));
    }

    #[test]
    fn cancelled_orders_count_only_as_orders_and_refunds() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 3).unwrap();
        let mut sales = SalesFold::default();
        sales.add(&row("a", "cancelled", 500, 100, 1, 500), day, day, None);
        sales.add(&row("b", "confirmed", 300, 0, 2, 150), day, day, None);
        let s = &sales.finish()[0];
        assert_eq!((s.orders, s.units, s.gross, s.refunds, s.net), (2, 2, 300, 100, 200));
        assert_eq!(s.cancellation_rate, 0.5);
    }
}
