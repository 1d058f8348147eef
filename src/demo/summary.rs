//! What the demo reports: its summary, the check of each read model against the log, and
//! how the summary is printed.

use super::*;

#[derive(Serialize)]
pub(super) struct DemoSummary {
    pub(super) database: String,
    pub(super) seed: u64,
    pub(super) shoppers: u32,
    pub(super) events_appended: u64,
    pub(super) events_total: u64,
    pub(super) events_per_sec: f64,
    pub(super) commands: u64,
    pub(super) carts: u64,
    pub(super) cart_operations: u64,
    pub(super) cart_operations_per_checkout: f64,
    pub(super) abandoned_carts: u64,
    pub(super) orders_placed: u64,
    pub(super) checkouts_rejected_out_of_stock: u64,
    pub(super) oversold_units: i64,
    pub(super) payment_failures: u64,
    pub(super) cancellations: u64,
    pub(super) shipments: u64,
    pub(super) returns: u64,
    pub(super) conflict_retries: u64,
    pub(super) flash_sale: FlashSale,
    pub(super) time_passed: TimePassed,
    pub(super) webhooks: WebhookDeliveries,
    pub(super) payments: super::payments::PaymentOutcomes,
    pub(super) log: LogReport,
    pub(super) read_models: Vec<ReadModelCheck>,
    pub(super) elapsed_ms: u64,
}

/// A read model after the run: caught up with the log, and equal to the independent fold.
#[derive(Serialize)]
pub(super) struct ReadModelCheck {
    pub(super) name: &'static str,
    pub(super) events: u64,
    pub(super) position: u64,
    pub(super) matches_log: bool,
}

/// Waits for each read model to catch up, then compares its rows with a fold of the log.
pub(super) async fn check_read_models(
    store: &dyn orderlog_store::EventStore,
    models: &crate::ReadModels,
) -> Result<Vec<ReadModelCheck>> {
    let mut checks = Vec::new();
    for runner in &models.runners {
        if !orderlog_projections::projector::wait_caught_up(store, &**runner, std::time::Duration::from_secs(60))
            .await?
        {
            bail!("read model {} did not catch up within 60 s", runner.name());
        }
        let checkpoint = runner.checkpoint().await?;
        checks.push(ReadModelCheck {
            name: runner.name(),
            events: checkpoint.events,
            position: checkpoint.cursor.position,
            matches_log: runner.verify().await?,
        });
    }
    Ok(checks)
}

/// The integration events delivered to the demo's receiver.
#[derive(Serialize)]
pub(super) struct WebhookDeliveries {
    pub(super) receiver: String,
    pub(super) delivered: u64,
    pub(super) received: u64,
    /// Messages whose Standard Webhooks signature the receiver verified.
    pub(super) signatures_verified: u64,
    pub(super) by_type: std::collections::BTreeMap<String, u64>,
    pub(super) elapsed_ms: u64,
}

/// What the timer did when the clock moved on after the sale.
#[derive(Serialize, Default)]
pub(super) struct TimePassed {
    pub(super) days: i64,
    pub(super) deadlines_fired: u64,
    /// Deadlines whose command no longer held (recorded, not retried).
    pub(super) refused: u64,
    pub(super) flash_available_before: i64,
    pub(super) flash_available_after: i64,
}

#[derive(Serialize)]
pub(super) struct FlashSale {
    pub(super) sku: String,
    pub(super) location: String,
    pub(super) units: u32,
    pub(super) shoppers: u64,
    pub(super) winners: u64,
    /// Winners who paid (every other one); the others' orders expire unpaid.
    pub(super) paid: u64,
    pub(super) rejected_out_of_stock: u64,
}

pub(super) fn money(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, (minor % 100).abs())
}

pub(super) fn print_summary(s: &DemoSummary) {
    println!("orderlog demo on {} (seed {}, {} shoppers)", s.database, s.seed, s.shoppers);
    println!();
    println!(
        "  events appended     {:>10}   ({:.0} events/s, {} ms)",
        s.events_appended, s.events_per_sec, s.elapsed_ms
    );
    println!("  events in the log   {:>10}", s.events_total);
    println!("  commands            {:>10}   ({} retried after a version conflict)", s.commands, s.conflict_retries);
    println!(
        "  carts               {:>10}   ({} abandoned, {:.1} cart operations per checkout)",
        s.carts, s.abandoned_carts, s.cart_operations_per_checkout
    );
    println!("  orders placed       {:>10}", s.orders_placed);
    println!("  out of stock        {:>10}   checkouts rejected", s.checkouts_rejected_out_of_stock);
    println!("  payment failures    {:>10}", s.payment_failures);
    let p = &s.payments;
    println!(
        "  payments            {:>10}   intents through the simulator: {} authorized, {} declined, {} voided, {} with 3-D Secure; \
         captured {}, refunded {} (cents); webhooks {} delivered, {} recorded",
        p.intents, p.authorized, p.declined, p.voided, p.three_d_secure, p.captured_cents, p.refunded_cents,
        p.webhooks_delivered, p.webhooks_recorded
    );
    println!(
        "  payments checked    {:>10}   charged without an order, {} charged twice, {} differing from the provider's ledger",
        p.charged_without_order, p.double_charged, p.ledger_mismatches
    );
    println!("  cancellations       {:>10}", s.cancellations);
    println!("  shipments           {:>10}", s.shipments);
    println!("  returns             {:>10}", s.returns);
    println!(
        "  flash sale          {:>10}   shoppers raced for {} units of {} at {}: {} won ({} paid), {} were told it sold out",
        s.flash_sale.shoppers,
        s.flash_sale.units,
        s.flash_sale.sku,
        s.flash_sale.location,
        s.flash_sale.winners,
        s.flash_sale.paid,
        s.flash_sale.rejected_out_of_stock
    );
    println!(
        "  time passes         {:>10}   days: {} deadlines fired ({} refused); {} available at {}: {} before, {} after",
        s.time_passed.days,
        s.time_passed.deadlines_fired,
        s.time_passed.refused,
        s.flash_sale.sku,
        s.flash_sale.location,
        s.time_passed.flash_available_before,
        s.time_passed.flash_available_after
    );
    println!(
        "  webhooks            {:>10}   messages delivered to a receiver on {} ({} signatures verified, {} ms): {}",
        s.webhooks.delivered,
        s.webhooks.receiver,
        s.webhooks.signatures_verified,
        s.webhooks.elapsed_ms,
        s.webhooks.by_type.iter().map(|(t, n)| format!("{n} {t}")).collect::<Vec<_>>().join(", ")
    );
    println!("  oversold units      {:>10}   (folded from the whole log)", s.oversold_units);
    println!();
    println!(
        "Whole log: {} orders placed, {} completed, {} cancelled, {} expired; {} carts expired",
        s.log.orders_placed, s.log.orders_completed, s.log.orders_cancelled, s.log.orders_expired, s.log.carts_expired
    );
    for (currency, gross) in &s.log.placed_by_currency {
        let captured = s.log.captured_by_currency.get(currency).copied().unwrap_or(0);
        let refunded = s.log.refunded_by_currency.get(currency).copied().unwrap_or(0);
        println!(
            "  {currency}: placed {} | captured {} | refunded {}",
            money(*gross),
            money(captured),
            money(refunded)
        );
        let of = |sums: &std::collections::BTreeMap<String, i64>| money(sums.get(currency).copied().unwrap_or(0));
        println!(
            "  {currency}: discounts {} | shipping {} | tax {} (the server's prices, promotions, zones and regions)",
            of(&s.log.discount_by_currency),
            of(&s.log.shipping_by_currency),
            of(&s.log.tax_by_currency)
        );
    }
    let uses: Vec<String> = s.log.promotion_uses.iter().map(|(code, n)| format!("{code} {n}")).collect();
    println!("  promotions used: {}", if uses.is_empty() { "none".to_string() } else { uses.join(", ") });
    for model in &s.read_models {
        println!(
            "Read model {}: {} events folded, {} the fold of the log",
            model.name,
            model.events,
            if model.matches_log { "equal to" } else { "DIFFERENT from" }
        );
    }
    println!();
    println!("Inventory (stock item: on hand / reserved / available)");
    for ((sku, location), level) in &s.log.inventory.items {
        println!(
            "  {:<34} {:>6} / {:>6} / {:>6}",
            format!("{sku} at {location}"),
            level.on_hand,
            level.reserved,
            level.available
        );
    }
}
