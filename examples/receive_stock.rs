//! Receives stock through the command service, then shows the stream's events.
//!
//! `cargo run --example receive_stock -- /tmp/example.db`

use std::sync::Arc;

use orderlog_commands::{Command, CommandEnvelope, CommandService, RandomIds, SystemClock};
use orderlog_domain::stock::StockCommand;
use orderlog_domain::{LocationId, Sku, StockKey};
use orderlog_store::{EventStore, SqliteStore};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "orderlog.db".into());
    let store = Arc::new(SqliteStore::open(&path)?);
    let service = CommandService::new(store.clone(), Arc::new(SystemClock), Arc::new(RandomIds));
    let stock = StockKey::new(Sku::parse("mug")?, LocationId::parse("berlin")?);
    let command = Command::Stock { stock, command: StockCommand::Receive { quantity: 24, reference: None } };
    // The command id is the idempotency key: running this example twice appends once.
    let outcome = service.execute(CommandEnvelope::new("receipt-2026-0042", "clerk@shop", command)).await?;
    let how = if outcome.repeated { "already appended by an earlier run:" } else { "appended" };
    println!("{how} {} event(s), last at position {:?}", outcome.events_appended, outcome.position);
    for event in store.read_stream("stock-mug@berlin", 1, 100).await? {
        println!(
            "{:>4} {} v{} {} by {}",
            event.position, event.stream_id, event.version, event.payload, event.metadata.actor
        );
    }
    Ok(())
}
