//! The demo pays through a payment provider it starts: the simulator (Stripe's protocol
//! over loopback HTTP), which sends signed webhooks — some twice, some late — to an
//! endpoint that takes them as `POST /payments/webhooks/stripe` does, while the payment
//! process runs beside the shoppers. At the end the provider's ledger is compared with the
//! log: nothing charged for an order that ended, nothing charged twice, and the same money
//! on both sides, payment by payment.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use orderlog_domain::payment::{PaymentState, PaymentStatus};
use orderlog_domain::{AnyState, PaymentId, StreamId};
use orderlog_payments::sim::{Faults, Simulator, WebhookTarget};
use orderlog_processes::reactor::ReactorRunner;

use super::*;

const SECRET_KEY: &str = "sk_test_demo";
const WEBHOOK_SECRET: &str = "whsec_demo";

pub(super) struct Payments {
    pub(super) sim: Arc<Simulator>,
    runner: Arc<ReactorRunner>,
    stop: tokio::sync::watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What became of the run's payments, from the log and from the provider's ledger.
#[derive(Serialize, Default)]
pub(super) struct PaymentOutcomes {
    pub(super) intents: u64,
    pub(super) authorized: u64,
    pub(super) declined: u64,
    pub(super) three_d_secure: u64,
    pub(super) voided: u64,
    pub(super) captured_cents: i64,
    pub(super) refunded_cents: i64,
    pub(super) webhooks_delivered: u64,
    pub(super) webhooks_recorded: u64,
    /// Intents holding money (captured, or authorized and not released) for an order that
    /// was cancelled or expired.
    pub(super) charged_without_order: u64,
    /// Orders charged by more than one intent, or more than their total.
    pub(super) double_charged: u64,
    /// Intents whose money differs between the provider's ledger and the log.
    pub(super) ledger_mismatches: u64,
}

pub(super) async fn start(
    tag: &str,
    service: Arc<CommandService>,
    store: Arc<dyn orderlog_store::EventStore>,
    db: &orderlog_api::database::Database,
) -> Result<Payments> {
    let sim = Simulator::new(SECRET_KEY, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(sim.clone().serve(listener));
    let hooks = service.clone();
    let endpoint = axum::Router::new().route(
        "/payments/webhooks/stripe",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let service = hooks.clone();
            async move {
                let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
                let now = chrono::Utc::now().timestamp();
                match orderlog_payments::webhook::receive(
                    &service,
                    None,
                    "stripe",
                    &[WEBHOOK_SECRET],
                    signature,
                    &body,
                    now,
                )
                .await
                {
                    Ok(_) => StatusCode::OK,
                    Err(orderlog_payments::webhook::WebhookError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
                    Err(_) => StatusCode::BAD_REQUEST,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/payments/webhooks/stripe", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, endpoint).await });
    sim.set_webhook(Some(WebhookTarget { url, secret: WEBHOOK_SECRET.into() }));
    // Realistic misbehaviour: a tenth of the webhooks come twice, a tenth come late.
    sim.set_faults(Faults {
        webhook_twice_percent: 10,
        webhook_late_percent: 10,
        webhook_delay_ms: 200,
        ..Faults::default()
    });
    let gateway = Arc::new(orderlog_payments::stripe::StripeGateway::new(&base, SECRET_KEY));
    // This run's provider knows only this run's payments: the process is this run's own (its
    // own checkpoint), acting on the streams its ids tag, so demos sharing a database do not
    // send each other's payments to the wrong provider.
    let name: &'static str = Box::leak(format!("payments:demo:{tag}").into_boxed_str());
    let process = orderlog_payments::process::PaymentProcess::scoped(service, gateway, name, tag.to_string());
    let process = Arc::new(process);
    let runner = Arc::new(ReactorRunner::new(process, store, db.processes().await?));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let stepping = runner.clone();
    let task = tokio::spawn(async move {
        while !*stopped.borrow() {
            match stepping.step().await {
                Ok(0) => {
                    let _ = tokio::time::timeout(std::time::Duration::from_millis(5), stopped.changed()).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "payment process");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(Payments { sim, runner, stop, task: std::sync::Mutex::new(Some(task)) })
}

impl Sim {
    pub(super) async fn payment(&self, id: &PaymentId) -> Result<PaymentState> {
        match self.service.state(&StreamId::payment(id)).await?.0 {
            AnyState::Payment(state) => Ok(*state),
            _ => bail!("payment-{id} is not a payment"),
        }
    }

    /// Waits until the intent has left `status` (the process or a webhook answered).
    async fn wait_past(&self, id: &PaymentId, status: PaymentStatus) -> Result<PaymentState> {
        let started = Instant::now();
        loop {
            let state = self.payment(id).await?;
            if state.status != status {
                return Ok(state);
            }
            if started.elapsed() > std::time::Duration::from_secs(30) {
                bail!("payment {id} stayed {} for 30 s", status.as_str());
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// The shopper pays with `card`; completes 3-D Secure when asked. Whether the order is
    /// now paid (authorized).
    pub(super) async fn pay(&self, shopper: &mut Shopper, order_id: &OrderId, card: &str) -> Result<bool> {
        let pay = Command::Pay { order_id: order_id.clone(), payment_method: card.into(), provider: "stripe".into() };
        self.must(shopper, pay).await?;
        let id = PaymentId::for_order(order_id, 1);
        let mut state = self.wait_past(&id, PaymentStatus::Authorizing).await?;
        if state.status == PaymentStatus::RequiresAction {
            let provider_ref = state.provider_ref.clone().unwrap_or_default();
            let (status, body) = self.payments().sim.authenticate(&provider_ref, true);
            if status != 200 {
                bail!("3-D Secure of {provider_ref}: {status} {body}");
            }
            state = self.wait_past(&id, PaymentStatus::RequiresAction).await?;
        }
        Ok(state.status == PaymentStatus::Authorized)
    }

    fn payments(&self) -> &Payments {
        self.payments.get().expect("payments start before shoppers")
    }
}

impl Payments {
    /// Lets the process and the late webhooks finish, stops the process, and compares.
    pub(super) async fn settle(&self, sim: &Sim, store: &dyn orderlog_store::EventStore) -> Result<PaymentOutcomes> {
        // Done when the process has reached the log's end and no intent waits for an answer,
        // twice in a row across the late webhooks' delay.
        let started = Instant::now();
        let mut quiet = 0;
        while quiet < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let head = store.head().await?;
            let at = self.runner.checkpoint().await?.cursor.position;
            let pending = self.sim.intents().iter().any(|i| i.status == "requires_action");
            quiet = if at >= head && !pending { quiet + 1 } else { 0 };
            if started.elapsed() > std::time::Duration::from_secs(60) {
                bail!("the payment process did not settle within 60 s");
            }
        }
        let _ = self.stop.send(true);
        let task = self.task.lock().expect("task lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let mut outcomes = PaymentOutcomes::default();
        let ledger = self.sim.intents();
        // Per order: intents that took money, what they took, and the order's total.
        let mut charged_by_order: BTreeMap<String, (u64, i64, i64)> = BTreeMap::new();
        for intent in &ledger {
            let (Some(payment), Some(order)) = (intent.metadata.get("payment_id"), intent.metadata.get("order_id"))
            else {
                continue;
            };
            let state = sim.payment(&PaymentId::parse(payment.as_str())?).await?;
            outcomes.intents += 1;
            match state.status {
                PaymentStatus::Authorized => outcomes.authorized += 1,
                PaymentStatus::Failed => outcomes.declined += 1,
                PaymentStatus::Voided | PaymentStatus::Expired => outcomes.voided += 1,
                _ => {}
            }
            outcomes.three_d_secure += u64::from(intent.payment_method.contains("threeDSecure"));
            outcomes.webhooks_recorded += state.provider_events.len() as u64;
            outcomes.captured_cents += state.captured;
            outcomes.refunded_cents += state.refunded;
            let held = intent.amount_received - intent.amount_refunded;
            if held != state.captured - state.refunded {
                outcomes.ledger_mismatches += 1;
            }
            let order_state = match sim.service.state(&StreamId::order(&OrderId::parse(order.as_str())?)).await?.0 {
                AnyState::Order(o) => *o,
                _ => bail!("order-{order} is not an order"),
            };
            let ended = order_state.status.is_terminal();
            if ended && (held > 0 || intent.amount_capturable > 0) {
                outcomes.charged_without_order += 1;
            }
            let total = order_state.placed.as_ref().map_or(0, |p| p.totals.total.amount);
            let entry = charged_by_order.entry(order.clone()).or_insert((0, 0, total));
            entry.0 += u64::from(intent.amount_received > 0);
            entry.1 += intent.amount_received;
        }
        outcomes.double_charged =
            charged_by_order.values().filter(|(intents, received, total)| *intents > 1 || received > total).count()
                as u64;
        outcomes.webhooks_delivered = self.sim.delivered().len() as u64;

        Ok(outcomes)
    }
}
