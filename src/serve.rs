//! `orderlog serve` and `orderlog token`: the HTTP API over a store, and its API tokens.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use orderlog_api::auth::{parse_scopes, CachedTokens, Scope, TokenStore};
use orderlog_api::metrics::Metrics;
use orderlog_api::{Api, TimedStore};
use orderlog_commands::{CommandService, DeadlinePolicy, RandomIds, ServiceConfig, SystemClock};
use orderlog_projections::cache::{follow_checkpoints, RowCache, ROW_CACHE_CHECK_MS};
use orderlog_projections::orders::OrderStatusTable;
use orderlog_projections::projector;
use orderlog_projections::table::TableModel;
use orderlog_store::EventStore;

use crate::{open_store, read_models_cached, DEFAULT_DATABASE};

#[derive(Args)]
pub struct ServeArgs {
    /// A SQLite file path, or a postgres:// URL.
    #[arg(long, default_value = DEFAULT_DATABASE)]
    database: String,
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve without tokens, letting every request in with every scope. For local
    /// development only: never on a reachable address.
    #[arg(long)]
    insecure_dev: bool,
    /// Do not run the projectors in this process (run `orderlog project` beside it).
    #[arg(long)]
    no_projectors: bool,
    /// Read every order from the store instead of serving orders from memory.
    /// (Without projectors in this process, orders are always read from the store.)
    #[arg(long)]
    no_order_cache: bool,
    /// Sign checkpoints of the log with this key (from `orderlog keys create`) and serve
    /// them at /checkpoints/latest, the public key at /checkpoints/key.
    #[arg(long)]
    checkpoint_key: Option<std::path::PathBuf>,
    /// With --checkpoint-key: sign a checkpoint this often (seconds) while the log grows,
    /// besides the ones signed on request.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    checkpoint_every_secs: u64,
    #[command(flatten)]
    deadlines: DeadlineArgs,
    /// How long the price a cart line gets from the catalog holds, in minutes; checkout
    /// prices a line again after that (0: always).
    #[arg(long, default_value_t = orderlog_commands::PRICE_TTL_MINUTES as u32, value_parser = clap::value_parser!(u32).range(0..=525_600))]
    price_ttl_minutes: u32,
    /// Let webhook URLs name loopback, private and link-local addresses (a receiver on this
    /// machine or network). Off by default: a subscriber could otherwise make orderlog call
    /// services that are not meant to be reachable.
    #[arg(long)]
    webhooks_allow_private: bool,
    /// Do not run the reactors (webhook queueing) and webhook deliveries in this process.
    #[arg(long)]
    no_reactors: bool,
    /// Do not fire due deadlines in this process (another process's timer does; a deadline
    /// fires once however many timers run).
    #[arg(long)]
    no_timer: bool,
    #[command(flatten)]
    payments: PaymentArgs,
}

/// The payment provider: its API (Stripe's protocol) and its webhooks' signing secrets.
#[derive(Args, Clone, Debug)]
pub struct PaymentArgs {
    /// The provider's API: https://api.stripe.com, or a simulator's http://127.0.0.1:PORT
    /// (`orderlog gateway-sim`). With it, this process runs the payment process.
    #[arg(long, env = "ORDERLOG_PAYMENT_API", requires = "payment_secret_key")]
    pub payment_api: Option<String>,
    /// The provider's secret API key (sk_…).
    #[arg(long, env = "ORDERLOG_PAYMENT_SECRET_KEY", hide_env_values = true)]
    pub payment_secret_key: Option<String>,
    /// The signing secret (whsec_…) of the webhooks the provider sends to
    /// POST /payments/webhooks/stripe; several, comma-separated, while a secret is rolled.
    #[arg(
        long = "payment-webhook-secret",
        env = "ORDERLOG_PAYMENT_WEBHOOK_SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub payment_webhook_secrets: Vec<String>,
}

/// When the deadlines that commands schedule fall due.
#[derive(Args, Clone, Copy, Debug)]
pub struct DeadlineArgs {
    /// A placed order not paid within this many minutes expires and releases its stock.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=525_600))]
    pub order_payment_minutes: u32,
    /// A cart untouched for this many days expires.
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u32).range(1..=3_650))]
    pub cart_idle_days: u32,
    /// Returns may be requested for this many days after delivery.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3_650))]
    pub return_window_days: u32,
}

impl DeadlineArgs {
    pub fn policy(self) -> DeadlinePolicy {
        DeadlinePolicy {
            order_payment: chrono::Duration::minutes(i64::from(self.order_payment_minutes)),
            cart_idle: chrono::Duration::days(i64::from(self.cart_idle_days)),
            return_window: chrono::Duration::days(i64::from(self.return_window_days)),
        }
    }
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token; it is printed once and stored only as a hash.
    Create {
        #[arg(long, default_value = DEFAULT_DATABASE)]
        database: String,
        /// Who the token is for: recorded as the actor of the events its commands write.
        #[arg(long)]
        principal: String,
        /// Comma-separated: shop, operations, audit, analytics, admin.
        #[arg(long)]
        scopes: String,
    },
    /// Every token, without secrets.
    List {
        #[arg(long, default_value = DEFAULT_DATABASE)]
        database: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id.
    Revoke {
        #[arg(long, default_value = DEFAULT_DATABASE)]
        database: String,
        id: String,
    },
}

async fn tokens(database: &str) -> Result<Arc<dyn TokenStore>> {
    Ok(open_store(database).await?.db.tokens().await?)
}

pub async fn token(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create { database, principal, scopes } => {
            let scopes: BTreeSet<Scope> = parse_scopes(&scopes).map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
            let made = tokens(&database).await?.create(&principal, &scopes).await.map_err(anyhow::Error::msg)?;
            eprintln!(
                "token {} for '{}' with scopes {}; it is shown only now:",
                made.info.id,
                made.info.principal,
                made.info.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
            );
            println!("{}", made.token);
        }
        TokenCommand::List { database, json } => {
            let list = tokens(&database).await?.list().await.map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                println!("{:<14} {:<24} {:<36} {:<22} revoked", "id", "principal", "scopes", "created");
                for t in list {
                    let scopes = t.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
                    println!(
                        "{:<14} {:<24} {:<36} {:<22} {}",
                        t.id,
                        t.principal,
                        scopes,
                        t.created_at,
                        t.revoked_at.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        TokenCommand::Revoke { database, id } => {
            if !tokens(&database).await?.revoke(&id).await.map_err(anyhow::Error::msg)? {
                bail!("no token '{id}'; `orderlog token list` shows them");
            }
            println!("revoked token {id}");
        }
    }
    Ok(())
}

pub async fn serve(args: ServeArgs) -> Result<()> {
    if args.insecure_dev && !args.listen.ip().is_loopback() {
        bail!(
            "--insecure-dev lets every request in without a token, so it listens only on a loopback \
             address (127.0.0.1 or ::1), not on {}",
            args.listen
        );
    }
    let opened = open_store(&args.database).await?;
    let metrics = Arc::new(Metrics::default());
    let store: Arc<dyn EventStore> = Arc::new(TimedStore::new(opened.store.clone(), metrics.clone()));
    // Orders read often are served from memory, kept exact by this process's projector; a
    // server whose projector runs elsewhere reads every order from the store.
    let order_cache = (!args.no_projectors && !args.no_order_cache).then(|| RowCache::new(OrderStatusTable::NAME));
    let models = read_models_cached(&opened.db, opened.store.clone(), order_cache.iter().cloned().collect()).await?;
    for runner in &models.runners {
        runner.ensure().await?;
    }
    let checkpoints = match &args.checkpoint_key {
        Some(path) => Some(Arc::new(orderlog_api::checkpoints::Signer::new(
            orderlog_replay::checkpoint::read_key(path).context("--checkpoint-key")?,
        ))),
        None => None,
    };
    let queries = opened.db.queries(4).await?;
    let tokens = opened.db.tokens().await?;
    if args.insecure_dev {
        tracing::warn!("INSECURE: --insecure-dev lets every request in with every scope, without a token");
        eprintln!(
            "WARNING: --insecure-dev: every request is let in with every scope, without a token. Never expose this."
        );
    } else if tokens.active().await.map_err(anyhow::Error::msg)? == 0 {
        bail!(
            "no API token exists for this database, so no request could be let in; create one with \
             `orderlog token create --database {} --principal NAME --scopes shop,operations` \
             (or start with --insecure-dev, for local development only)",
            orderlog_store::postgres::redact(&args.database)
        );
    }
    let tokens: Arc<dyn TokenStore> = Arc::new(CachedTokens::new(tokens));
    let running = Arc::new(AtomicBool::new(true));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Each job (a read model, the timer, a reactor, a subscriber's deliveries) runs in one
    // process at a time across every process on this database.
    let leases = Arc::new(orderlog_processes::lease::Leases::new(
        opened.db.processes().await?,
        orderlog_processes::lease::holder_name(),
    ));
    tracing::info!(holder = leases.holder(), "leases held as");
    if let Some(cache) = &order_cache {
        let every = std::time::Duration::from_millis(ROW_CACHE_CHECK_MS);
        tokio::spawn(follow_checkpoints(models.rows.clone(), vec![cache.clone()], every, stopped.clone()));
    }
    let projectors = if args.no_projectors {
        None
    } else {
        let (log, runners, running) = (opened.store.clone(), models.runners.clone(), running.clone());
        let gate: Arc<dyn projector::Gate> = leases.clone();
        Some(tokio::spawn(async move {
            let ended = projector::run_live_gated(log, runners, gate, stopped).await;
            running.store(false, Ordering::Relaxed);
            for (name, result) in ended {
                if let Err(e) = result {
                    tracing::error!(projection = name, error = %e, "projection stopped");
                }
            }
        }))
    };
    // The Merkle tree follows the log in this process (its extensions, from any process, are
    // serialised by the store), and checkpoints are signed at the interval.
    let proofs = Arc::new(orderlog_replay::checkpoint::TreeFollower::new(opened.db.tree()));
    let every = std::time::Duration::from_secs(args.checkpoint_every_secs);
    let signing = checkpoints.clone().map(|signer| (signer, every));
    let process_db = opened.db.processes().await?;
    let webhook_config = orderlog_processes::webhooks::WebhookConfig {
        allow_private: args.webhooks_allow_private,
        ..Default::default()
    };
    let webhooks = orderlog_processes::webhooks::Webhooks::new(process_db.clone(), webhook_config);
    let maintainer = tokio::spawn(orderlog_api::checkpoints::maintain(
        proofs.clone(),
        signing,
        Some(webhooks.clone()),
        stop.subscribe(),
    ));
    let config = ServiceConfig {
        deadlines: args.deadlines.policy(),
        price_ttl: chrono::Duration::minutes(i64::from(args.price_ttl_minutes)),
        ..ServiceConfig::default()
    };
    let service =
        Arc::new(CommandService::with_config(store.clone(), Arc::new(SystemClock), Arc::new(RandomIds), config));
    let timer = (!args.no_timer).then(|| {
        let timer = orderlog_processes::timer::Timer::new(service.clone(), queries.clone(), Arc::new(SystemClock));
        tokio::spawn(timer.run(leases.clone(), stop.subscribe()))
    });
    let mut reactors = Vec::new();
    if !args.no_reactors {
        let reactor = Arc::new(orderlog_processes::webhooks::WebhookReactor::new(webhooks.clone()));
        let runner = orderlog_processes::reactor::ReactorRunner::new(reactor, opened.store.clone(), process_db.clone());
        reactors.push(tokio::spawn(runner.run(leases.clone(), stop.subscribe())));
        let low_stock =
            Arc::new(orderlog_processes::low_stock::LowStockReactor::new(webhooks.clone(), opened.store.clone()));
        let runner =
            orderlog_processes::reactor::ReactorRunner::new(low_stock, opened.store.clone(), process_db.clone());
        reactors.push(tokio::spawn(runner.run(leases.clone(), stop.subscribe())));
        let dispatcher = orderlog_processes::webhooks::Dispatcher::new(webhooks.clone());
        reactors.push(tokio::spawn(dispatcher.run(leases.clone(), stop.subscribe())));
        if let (Some(base), Some(key)) = (&args.payments.payment_api, &args.payments.payment_secret_key) {
            let gateway = Arc::new(orderlog_payments::stripe::StripeGateway::new(base, key));
            let process = Arc::new(orderlog_payments::process::PaymentProcess::new(service.clone(), gateway));
            let runner =
                orderlog_processes::reactor::ReactorRunner::new(process, opened.store.clone(), process_db.clone());
            reactors.push(tokio::spawn(runner.run(leases.clone(), stop.subscribe())));
            tracing::info!(api = %base, "payments through the provider");
        }
    }
    let payments = (!args.payments.payment_webhook_secrets.is_empty()).then(|| {
        Arc::new(orderlog_api::payments::Payments::new("stripe", args.payments.payment_webhook_secrets.clone()))
    });
    let api = Arc::new(Api {
        service,
        store,
        queries,
        tokens,
        runners: models.runners.clone(),
        metrics,
        insecure_dev: args.insecure_dev,
        projections_running: running,
        order_cache,
        proofs,
        checkpoints,
        webhooks: Some(webhooks),
        payments,
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen: cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    println!("listening on http://{address}");
    tracing::info!(%address, database = %orderlog_store::postgres::redact(&args.database), "serving");
    axum::serve(orderlog_api::listener::ProblemListener(listener), orderlog_api::router(api))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    let _ = stop.send(true);
    let _ = maintainer.await;
    if let Some(timer) = timer {
        let _ = timer.await;
    }
    for task in reactors {
        let _ = task.await;
    }
    if let Some(projectors) = projectors {
        let _ = projectors.await;
    }
    // Others take over at once instead of when the leases expire.
    if let Err(e) = leases.release_all().await {
        tracing::warn!(error = %e, "leases not released; others take over when they expire");
    }
    Ok(())
}
