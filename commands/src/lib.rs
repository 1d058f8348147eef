//! The command side of orderlog: load every stream a command touches, decide, and append
//! with the versions that were loaded, so a concurrent change makes the append fail instead
//! of being lost; then reload and decide again, a bounded number of times.
//!
//! Principal types: [`CommandService`], which runs a [`CommandEnvelope`] (a [`Command`] with
//! its idempotency key and who sent it) and returns a [`CommandOutcome`] or a
//! [`CommandError`]; [`Clock`] and [`IdSource`], passed in so that simulations replay exactly.

mod load;
mod plan;
mod service;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use orderlog_domain::cart::CartCommand;
use orderlog_domain::checkout::CheckoutCommand;
use orderlog_domain::customer::CustomerProfileCommand;
use orderlog_domain::deadline::DeadlineId;
use orderlog_domain::order::{OrderCommand, ReturnedLine};
use orderlog_domain::payment::PaymentAction;
use orderlog_domain::price_list::PriceListCommand;
use orderlog_domain::product::ProductCommand;
use orderlog_domain::promotion::PromotionCommand;
use orderlog_domain::shipment::ShipmentCommand;
use orderlog_domain::shipping::ShippingZoneCommand;
use orderlog_domain::stock::StockCommand;
use orderlog_domain::tax::{TaxRegionCommand, TaxRegionId};
use orderlog_domain::{
    CartId, CustomerId, OrderId, PaymentId, PriceListId, ProductId, PromotionCode, Rejection, ReturnId, ShipmentId,
    ShippingZoneId, StockKey,
};
use orderlog_store::{StoreError, StreamVersion};
use serde::{Deserialize, Serialize};

pub use plan::{CartView, OfferedShipping};
pub use service::{CommandService, DeadlinePolicy, ExternalTax, ServiceConfig, PRICE_TTL_MINUTES};

/// Every command orderlog accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "target", rename_all = "snake_case")]
pub enum Command {
    Cart {
        cart_id: CartId,
        command: CartCommand,
    },
    Checkout {
        checkout: CheckoutCommand,
    },
    /// Payment events, completion and return requests of one order.
    Order {
        order_id: OrderId,
        command: OrderCommand,
    },
    CancelOrder {
        order_id: OrderId,
        reason: String,
    },
    ExpireOrder {
        order_id: OrderId,
    },
    ReceiveReturn {
        order_id: OrderId,
        return_id: ReturnId,
        lines: Vec<ReturnedLine>,
    },
    /// Receipts, adjustments, safety stock, incoming and backorder policy of one stock item.
    Stock {
        stock: StockKey,
        command: StockCommand,
    },
    Shipment {
        shipment_id: ShipmentId,
        command: ShipmentCommand,
    },
    /// Runs a deadline's command if it is due and has not fired: the timer sends it.
    FireDeadline {
        deadline_id: DeadlineId,
    },
    /// Closes an order's return window (the command of a return-window deadline).
    CloseReturnWindow {
        order_id: OrderId,
    },
    /// Creates or changes a product of the catalog; the SKUs it adds are claimed for it.
    Product {
        product_id: ProductId,
        command: ProductCommand,
    },
    /// Creates or changes a price list; a new list joins its currency's index.
    PriceList {
        price_list_id: PriceListId,
        command: PriceListCommand,
    },
    /// Creates or ends a promotion; an automatic one joins the automatic index.
    Promotion {
        code: PromotionCode,
        command: PromotionCommand,
    },
    /// Defines a tax region's rates.
    TaxRegion {
        region_id: TaxRegionId,
        command: TaxRegionCommand,
    },
    /// Defines a shipping zone: its countries are claimed in its currency's index.
    ShippingZone {
        zone_id: ShippingZoneId,
        command: ShippingZoneCommand,
    },
    /// Puts a registered customer in a customer group or takes them out.
    Customer {
        customer_id: CustomerId,
        command: CustomerProfileCommand,
    },
    /// Pays for a placed order through a provider: starts the order's next payment intent
    /// for the order's total and requests its authorization.
    Pay {
        order_id: OrderId,
        payment_method: String,
        provider: String,
    },
    /// A request to a payment intent (capture, void, refund) or a provider's answer; an
    /// answer that changes what the order knows of its payment changes the order in the
    /// same append.
    Payment {
        payment_id: PaymentId,
        action: PaymentAction,
    },
}

impl Command {
    /// The hash that tells a retry of a command id from another command under the same id:
    /// SHA-256 of the command's canonical encoding, version 1, which is the JSON serde writes
    /// for [`Command`] (variants tagged `target`, fields in declaration order). Events keep
    /// the hash they were written with, so this encoding must not change: a test holds
    /// hashes written by earlier builds. A different encoding would be version 2, written
    /// as `v2:{hex}` beside version 1 hashes, never in their place.
    pub fn hash(&self) -> String {
        use sha2::Digest;
        let json = serde_json::to_string(self).expect("commands serialize");
        hex::encode(sha2::Sha256::digest(json.as_bytes()))
    }
}

/// A command with its idempotency key and its provenance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandEnvelope {
    /// The idempotency key: the same id again returns the first result.
    pub command_id: String,
    /// The principal that sends it.
    pub actor: String,
    /// The business flow it belongs to; the command id when absent.
    pub correlation_id: Option<String>,
    /// The command or event that caused it.
    pub causation_id: Option<String>,
    pub command: Command,
}

impl CommandEnvelope {
    pub fn new(command_id: impl Into<String>, actor: impl Into<String>, command: Command) -> CommandEnvelope {
        CommandEnvelope {
            command_id: command_id.into(),
            actor: actor.into(),
            correlation_id: None,
            causation_id: None,
            command,
        }
    }

    pub fn correlated(mut self, correlation_id: impl Into<String>) -> CommandEnvelope {
        self.correlation_id = Some(correlation_id.into());
        self
    }
}

/// What a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutcome {
    pub command_id: String,
    pub events_appended: u32,
    /// Every stream the command appended to or checked, at its version afterwards.
    pub streams: Vec<StreamVersion>,
    /// Global position of the command's last event: wait for a read model to pass it to
    /// read your own write. `None` when the command changed nothing.
    pub position: Option<u64>,
    /// The order concerned, where there is one (checkout: the order placed, or the one an
    /// earlier checkout of the same cart placed).
    pub order_id: Option<OrderId>,
    /// True when this is the recorded result of an earlier run of the same command id.
    pub repeated: bool,
    /// How many times a version conflict made the command reload and decide again.
    pub retries: u32,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    #[error("rejected: {0}")]
    Rejected(Rejection),
    #[error("command id '{command_id}' was already used for a different command")]
    IdempotencyKeyReused { command_id: String },
    #[error("gave up after {retries} retries: the streams kept changing concurrently")]
    TooManyConflicts { retries: u32 },
    #[error("invalid command: {0}")]
    Invalid(String),
    #[error("the event at position {position} (type '{event_type}', stream '{stream_id}') cannot be read by this build: {detail}")]
    UnreadableEvent { position: u64, stream_id: String, event_type: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Rejection> for CommandError {
    fn from(r: Rejection) -> Self {
        CommandError::Rejected(r)
    }
}

/// Where the service reads the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock for simulations and tests: starts at a given time and moves only when told.
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock(Mutex::new(start))
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().expect("clock lock") += by;
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.0.lock().expect("clock lock") = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock lock")
    }
}

/// Where new ids (for carts, orders, shipments, correlation) come from.
pub trait IdSource: Send + Sync {
    fn next_id(&self) -> String;
}

/// Random UUIDs.
pub struct RandomIds;

impl IdSource for RandomIds {
    fn next_id(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

/// Sequential ids with a prefix ("sim-1", "sim-2", …), for simulations and tests.
pub struct SequentialIds {
    prefix: String,
    next: AtomicU64,
}

impl SequentialIds {
    pub fn new(prefix: impl Into<String>) -> SequentialIds {
        SequentialIds { prefix: prefix.into(), next: AtomicU64::new(1) }
    }
}

impl IdSource for SequentialIds {
    fn next_id(&self) -> String {
        format!("{}{}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed))
    }
}
