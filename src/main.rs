//! `orderlog`: the binary that wires the store, the command service and the tools.

use orderlog_replay::archive::ExportFilter;

mod audit;
mod demo;
mod processes;
mod report;
mod serve;

// mimalloc instead of the system allocator: events are decoded on one thread and freed on
// another (import's checking thread, the projector's read-ahead, the HTTP workers), which
// glibc's arenas serialize on a lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use orderlog_api::database::Database;
use orderlog_projections::projector::{self, AnyRunner};
use orderlog_projections::table::RowStore;
use orderlog_store::EventStore;

/// An event-sourced CQRS order engine for online shops.
#[derive(Parser)]
#[command(name = "orderlog", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run a simulated shop against the store and report what happened.
    Demo(demo::DemoArgs),
    /// Create the store's schema, or bring it up to date.
    Migrate {
        /// A SQLite file path, or a postgres:// URL.
        #[arg(long, default_value = DEFAULT_DATABASE)]
        database: String,
    },
    /// Keep the read models up to date: catch up, then follow the log until interrupted.
    Project {
        /// A SQLite file path, or a postgres:// URL.
        #[arg(long, default_value = DEFAULT_DATABASE)]
        database: String,
        /// Catch up once and exit instead of following the log.
        #[arg(long)]
        once: bool,
    },
    /// Serve the HTTP API (commands, read models, event feed); runs the projectors too.
    Serve(serve::ServeArgs),
    /// A payment provider simulator speaking Stripe's PaymentIntents protocol, with a
    /// ledger, idempotency keys, test cards, faults (POST /_sim/faults) and signed webhooks.
    GatewaySim {
        #[arg(long, default_value = "127.0.0.1:12111")]
        listen: std::net::SocketAddr,
        /// The API key clients must send (Authorization: Bearer …).
        #[arg(long, default_value = "sk_test_orderlog")]
        secret_key: String,
        /// Where webhooks go, e.g. http://127.0.0.1:8080/payments/webhooks/stripe.
        #[arg(long)]
        webhook_url: Option<String>,
        /// The secret webhooks are signed with (give the same to `serve --payment-webhook-secret`).
        #[arg(long, default_value = "whsec_orderlog_sim")]
        webhook_secret: String,
    },
    /// Create, list and revoke API tokens.
    Token {
        #[command(subcommand)]
        command: serve::TokenCommand,
    },
    /// An aggregate's state at a version or a moment, with the events that led to it and
    /// who did each and why; or, with --correlation, every event of one business flow.
    History {
        /// The stream: cart-ID, order-ID, stock-SKU@LOCATION or shipment-ID.
        #[arg(required_unless_present = "correlation")]
        stream: Option<String>,
        #[arg(long, default_value = DEFAULT_DATABASE)]
        database: String,
        /// The state after every event recorded at or before this time (RFC 3339).
        #[arg(long, conflicts_with = "at_version")]
        as_of: Option<String>,
        /// The state after the stream's first N events.
        #[arg(long)]
        at_version: Option<u64>,
        /// Every event of this correlation id (a checkout, a return …), across streams.
        #[arg(long, conflicts_with_all = ["stream", "as_of", "at_version"])]
        correlation: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Write the log as NDJSON to stdout (one event per line, then an end line with a
    /// count and a digest), for backups and for moving a store between backends.
    Export {
        #[arg(long, default_value = DEFAULT_DATABASE)]
        database: String,
        /// Events at positions ≥ this.
        #[arg(long)]
        from: Option<u64>,
        /// Events at positions ≤ this.
        #[arg(long)]
        to: Option<u64>,
        /// Streams of one category: cart, order, stock or shipment.
        #[arg(long)]
        category: Option<String>,
        /// Compress with gzip.
        #[arg(long)]
        gzip: bool,
        /// Sign a checkpoint of the exported events with this key (from `keys create`) and
        /// put it on the end line; only for an export from the log's first event.
        #[arg(long)]
        checkpoint_key: Option<PathBuf>,
    },
    /// Load an export (plain or gzip) into an empty store, verifying every hash first; an
    /// interrupted import is resumed when run again.
    Import {
        file: PathBuf,
        #[arg(long, default_value = DEFAULT_DATABASE)]
        database: String,
        /// Require the file's end line to carry a checkpoint signed by this key (64 hex
        /// digits); without it a checkpoint's root is still checked, not its signature.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Check the whole log — every stream's versions and hash chain, and every commit's
    /// record of which events it wrote where; exits non-zero naming the first broken event.
    Verify {
        #[arg(long, default_value = DEFAULT_DATABASE)]
        database: String,
        /// Start at the commit that wrote the event at this position.
        #[arg(long)]
        from: Option<u64>,
        /// Also check that the log extends this signed checkpoint (a file `orderlog
        /// checkpoint` wrote): catches a history rewritten with every hash recomputed.
        #[arg(long, requires = "public_key", conflicts_with = "from")]
        against: Option<PathBuf>,
        /// The trusted public key of the checkpoint (64 hex digits, as `keys create` printed).
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Sign a checkpoint of the log (its size and Merkle root) with a key from `keys
    /// create`, and print it as JSON; keep it somewhere the database's writers cannot reach.
    Checkpoint {
        #[arg(long, default_value = DEFAULT_DATABASE)]
        database: String,
        /// The signing key's file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Print, as JSON, the Merkle proof that the event at POSITION is in the log (of
    /// --size events; the whole log by default), or with --consistency M that the log
    /// extends its first M events. `tools/merkle_verify.py` checks either.
    Prove {
        #[arg(long, default_value = DEFAULT_DATABASE)]
        database: String,
        #[arg(required_unless_present = "consistency", conflicts_with = "consistency")]
        position: Option<u64>,
        #[arg(long)]
        consistency: Option<u64>,
        #[arg(long)]
        size: Option<u64>,
    },
    /// Auditing a server's signed history.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Signing keys for checkpoints.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Rebuild read models from the whole log without taking them offline: a copy is
    /// folded beside each live one and swapped in when it has caught up. Interrupted, it
    /// resumes when run again.
    Rebuild {
        /// inventory_levels or order_status.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        projection: Option<String>,
        /// Every read model.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value = DEFAULT_DATABASE)]
        database: String,
    },
    /// Read models and where they stand.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Reactors: where they stand, what they parked; retry or skip a parked event.
    Processes {
        #[command(subcommand)]
        command: processes::ProcessesCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Fetch the server's latest signed checkpoint periodically, check that it extends the
    /// last one trusted (a consistency proof), keep it, and alarm (exit code 2, a log line,
    /// --alarm-url) when it does not.
    Watch(audit::WatchArgs),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an Ed25519 signing key in a new file; prints its public key.
    Create {
        /// The key file to create (it must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ProjectionsCommand {
    /// Each read model's position, events folded, lag behind the log, and error if stopped.
    Status {
        /// A SQLite file path, or a postgres:// URL.
        #[arg(long, default_value = DEFAULT_DATABASE)]
        database: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// The read models of a database: where their rows live and a runner for each.
pub struct ReadModels {
    pub rows: Arc<dyn RowStore>,
    pub runners: Vec<Arc<dyn AnyRunner>>,
}

/// The read models of `db`.
pub async fn read_models(db: &Database, log: Arc<dyn EventStore>) -> Result<ReadModels> {
    read_models_cached(db, log, Vec::new()).await
}

/// The read models of `db`, whose runners keep these caches of rows exact.
pub async fn read_models_cached(
    db: &Database,
    log: Arc<dyn EventStore>,
    caches: Vec<Arc<orderlog_projections::cache::RowCache>>,
) -> Result<ReadModels> {
    use orderlog_projections::inventory::InventoryTable;
    use orderlog_projections::orders::OrderStatusTable;
    let rows = db.rows().await?;
    let watched: Arc<dyn RowStore> = if caches.is_empty() {
        rows.clone()
    } else {
        Arc::new(orderlog_projections::cache::WatchedRows::new(rows.clone(), caches))
    };
    let runners = vec![
        projector::runner::<InventoryTable>(log.clone(), watched.clone()),
        projector::runner::<OrderStatusTable>(log.clone(), watched.clone()),
        projector::runner::<orderlog_projections::payments::PaymentStatusTable>(log.clone(), watched.clone()),
        projector::runner::<orderlog_projections::deadlines::DeadlineTable>(log, watched),
    ];
    Ok(ReadModels { rows, runners })
}

/// The embedded default store.
pub const DEFAULT_DATABASE: &str = "./orderlog.db";

/// A database as the CLI opened it.
pub struct Opened {
    pub db: Database,
    pub store: Arc<dyn EventStore>,
    /// Migrations this open applied.
    pub applied: Vec<u32>,
}

/// Opens the database named by `database`: a `postgres://` URL, or a SQLite file path (the
/// default). Either way the schema is created or brought up to date.
pub async fn open_store(database: &str) -> Result<Opened> {
    let db = Database::open(database).await?;
    Ok(Opened { store: db.store(), applied: db.applied_migrations().to_vec(), db })
}

/// A public key as 64 hex digits.
fn hex_key(key: &ed25519_dalek::VerifyingKey) -> String {
    key.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> ExitCode {
    // RUST_LOG picks what is logged (default: warnings; `info` logs every request with its
    // id, status and latency); ORDERLOG_LOG_FORMAT=json writes one JSON object per line.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour only for a person at a terminal: a file or a log collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    if std::env::var("ORDERLOG_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().with_current_span(true).init();
    } else {
        logs.init();
    }
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Commands::Demo(args) => demo::run(args).await,
        Commands::Serve(args) => serve::serve(args).await,
        Commands::GatewaySim { listen, secret_key, webhook_url, webhook_secret } => {
            use orderlog_payments::sim::{Simulator, WebhookTarget};
            let target = webhook_url.map(|url| WebhookTarget { url, secret: webhook_secret });
            let sim = Simulator::new(&secret_key, target);
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("--listen: cannot listen on {listen}"))?;
            println!("gateway simulator listening on http://{}", listener.local_addr()?);
            sim.serve(listener).await?;
            Ok(())
        }
        Commands::Token { command } => serve::token(command).await,
        Commands::Rebuild { projection, all, database } => rebuild(&database, projection, all).await,
        Commands::Export { database, from, to, category, gzip, checkpoint_key } => {
            export(&database, ExportFilter { from, to, category }, gzip, checkpoint_key.as_deref()).await
        }
        Commands::Import { file, database, public_key } => import(&database, &file, public_key.as_deref()).await,
        Commands::Prove { database, position, consistency, size } => {
            let opened = open_store(&database).await?;
            let json = match (position, consistency) {
                (Some(position), _) => serde_json::to_string_pretty(
                    &orderlog_replay::checkpoint::prove_inclusion(opened.db.tree(), position, size).await?,
                )?,
                (None, Some(old)) => serde_json::to_string_pretty(
                    &orderlog_replay::checkpoint::prove_consistency(opened.db.tree(), old, size).await?,
                )?,
                (None, None) => bail!("name a POSITION, or give --consistency M"),
            };
            println!("{json}");
            Ok(())
        }
        Commands::Audit { command: AuditCommand::Watch(args) } => {
            let code = audit::watch(args).await?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Commands::Keys { command: KeysCommand::Create { out } } => {
            let key = orderlog_replay::checkpoint::create_key(&out)?;
            eprintln!(
                "created {} (key id {}); its public key:",
                out.display(),
                orderlog_replay::checkpoint::key_id(&key)
            );
            println!("{}", hex_key(&key));
            Ok(())
        }
        Commands::Checkpoint { database, key } => {
            let key = orderlog_replay::checkpoint::read_key(&key)?;
            let opened = open_store(&database).await?;
            let tree = orderlog_replay::checkpoint::TreeFollower::new(opened.db.tree());
            let checkpoint = tree.sign(&key, chrono::Utc::now()).await?;
            println!("{}", serde_json::to_string_pretty(&checkpoint)?);
            Ok(())
        }
        Commands::Verify { database, against: Some(path), public_key, .. } => {
            use orderlog_replay::checkpoint::{parse_public_key, verify_against, Checkpoint};
            let key = parse_public_key(public_key.as_deref().unwrap_or_default()).context("--public-key")?;
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("--against: cannot read '{}'", path.display()))?;
            let checkpoint: Checkpoint = serde_json::from_str(&text)
                .with_context(|| format!("--against: '{}' is not a checkpoint", path.display()))?;
            let opened = open_store(&database).await?;
            let found = verify_against(&*opened.db.tree(), &checkpoint, &key).await?;
            println!(
                "the log ({} events) extends the checkpoint of {} events signed at {} by key {}",
                found.size, found.checkpoint_size, checkpoint.time, checkpoint.key_id
            );
            Ok(())
        }
        Commands::Verify { database, from, .. } => {
            let opened = open_store(&database).await?;
            let head = opened.store.head().await?;
            let mut progress = orderlog_replay::progress::Progress::new("verify", Some(head));
            let report = orderlog_replay::verify_log(&*opened.store, from, &mut progress).await?;
            progress.finish();
            match report.first_broken {
                None => {
                    println!(
                        "verified {} events in {} streams: every chain and every commit record holds",
                        report.events, report.streams
                    );
                    Ok(())
                }
                Some(b) if b.stream_id.is_empty() => {
                    bail!("the log is broken at position {}: {}", b.position, b.reason)
                }
                Some(b) if b.position == 0 => bail!("the stream '{}' is broken: {}", b.stream_id, b.reason),
                Some(b) => bail!(
                    "the log is broken at position {} ('{}' version {}): {}",
                    b.position,
                    b.stream_id,
                    b.version,
                    b.reason
                ),
            }
        }
        Commands::History { stream, database, as_of, at_version, correlation, json } => {
            history(&database, stream, as_of, at_version, correlation, json).await
        }
        Commands::Migrate { database } => {
            let opened = open_store(&database).await?;
            let shown = orderlog_store::postgres::redact(&database);
            if opened.applied.is_empty() {
                println!("{shown}: schema is up to date (head position {})", opened.store.head().await?);
            } else {
                println!("{shown}: applied migrations {:?}", opened.applied);
            }
            Ok(())
        }
        Commands::Project { database, once } => {
            let opened = open_store(&database).await?;
            let runners = read_models(&opened.db, opened.store.clone()).await?.runners;
            let (stop, stopped) = tokio::sync::watch::channel(once);
            if !once {
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    let _ = stop.send(true);
                });
                eprintln!("following the log; Ctrl-C stops");
            } else {
                for runner in &runners {
                    runner.ensure().await?;
                    while runner.step().await? > 0 {}
                }
            }
            let ended = if once {
                Vec::new()
            } else {
                // One process per read model across every process on this database.
                let leases = Arc::new(orderlog_processes::lease::Leases::new(
                    opened.db.processes().await?,
                    orderlog_processes::lease::holder_name(),
                ));
                let ended =
                    projector::run_live_gated(opened.store.clone(), runners.clone(), leases.clone(), stopped).await;
                leases.release_all().await?;
                ended
            };
            for status in projector::status(&*opened.store, &runners, chrono::Utc::now()).await? {
                println!("{}: {} events folded, at position {}", status.name, status.events, status.position);
            }
            let failed: Vec<String> =
                ended.into_iter().filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e}"))).collect();
            if !failed.is_empty() {
                bail!("{}", failed.join("; "));
            }
            Ok(())
        }
        Commands::Processes { command } => processes::run(command).await,
        Commands::Projections { command: ProjectionsCommand::Status { database, json } } => {
            let opened = open_store(&database).await?;
            let runners = read_models(&opened.db, opened.store.clone()).await?.runners;
            let statuses = projector::status(&*opened.store, &runners, chrono::Utc::now()).await?;
            if json {
                println!("{}", serde_json::to_string(&statuses)?);
            } else {
                println!(
                    "{:<20} {:>7} {:>10} {:>10} {:>8} {:>9}  error",
                    "projection", "version", "position", "events", "behind", "seconds"
                );
                for s in &statuses {
                    println!(
                        "{:<20} {:>7} {:>10} {:>10} {:>8} {:>9.1}  {}",
                        s.name,
                        s.version,
                        s.position,
                        s.events,
                        s.events_behind,
                        s.seconds_behind,
                        s.error.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(())
        }
    }
}

fn print_event(e: &orderlog_replay::history::HistoryEvent) {
    println!(
        "{:>8} {:<28} v{:<4} {:<22} {}  by {}  command {}  correlation {}{}",
        e.position,
        e.stream_id,
        e.version,
        e.event_type,
        e.recorded_at,
        e.actor,
        e.command_id,
        e.correlation_id,
        e.causation_id.as_deref().map(|c| format!("  caused by {c}")).unwrap_or_default()
    );
}

async fn history(
    database: &str,
    stream: Option<String>,
    as_of: Option<String>,
    at_version: Option<u64>,
    correlation: Option<String>,
    json: bool,
) -> Result<()> {
    use orderlog_replay::history::{correlated, stream_history, Point};
    let opened = open_store(database).await?;
    if let Some(correlation) = correlation {
        let events = correlated(&*opened.store, &correlation).await?;
        if json {
            println!("{}", serde_json::to_string(&events)?);
        } else {
            println!("{} events with correlation id '{correlation}', in log order:", events.len());
            events.iter().for_each(print_event);
        }
        return Ok(());
    }
    let stream = stream.context("name a stream, or give --correlation")?;
    let point = match (as_of, at_version) {
        (Some(t), _) => Point::AsOf(
            chrono::DateTime::parse_from_rfc3339(&t)
                .with_context(|| format!("--as-of: '{t}' is not an RFC 3339 time such as 2026-11-26T10:00:00Z"))?
                .with_timezone(&chrono::Utc),
        ),
        (None, Some(n)) => Point::AtVersion(n),
        (None, None) => Point::Latest,
    };
    let history = stream_history(&*opened.store, &stream, point).await?;
    if json {
        println!("{}", serde_json::to_string(&history)?);
    } else {
        println!("{} at version {} of {}:", history.stream_id, history.version, history.current_version);
        println!("{}", serde_json::to_string_pretty(&history.state)?);
        println!("events:");
        history.events.iter().for_each(print_event);
    }
    Ok(())
}

async fn export(database: &str, filter: ExportFilter, gzip: bool, key: Option<&std::path::Path>) -> Result<()> {
    use orderlog_replay::archive::export_signed;
    if let Some(c) = filter.category.as_deref().filter(|c| !["cart", "order", "stock", "shipment"].contains(c)) {
        bail!("--category: '{c}' is not one of cart, order, stock, shipment");
    }
    let opened = open_store(database).await?;
    let head = opened.store.head().await?;
    let mut progress = orderlog_replay::progress::Progress::new("export", Some(head));
    let stdout = std::io::stdout().lock();
    let mut out: Box<dyn std::io::Write> = if gzip {
        Box::new(flate2::write::GzEncoder::new(std::io::BufWriter::new(stdout), flate2::Compression::fast()))
    } else {
        Box::new(std::io::BufWriter::new(stdout))
    };
    let key = key.map(orderlog_replay::checkpoint::read_key).transpose().context("--checkpoint-key")?;
    let tree = orderlog_replay::checkpoint::TreeFollower::new(opened.db.tree());
    let signer = key.as_ref().map(|key| (&tree, key));
    let written = export_signed(&*opened.store, &mut out, &filter, signer, &mut progress).await?;
    drop(out);
    eprintln!("exported {written} events");
    Ok(())
}

async fn import(database: &str, file: &std::path::Path, public_key: Option<&str>) -> Result<()> {
    use orderlog_replay::ReplayError;
    let trusted = public_key.map(orderlog_replay::checkpoint::parse_public_key).transpose().context("--public-key")?;
    let opened = open_store(database).await?;
    let path = file.to_path_buf();
    let open = move || -> Result<Box<dyn std::io::BufRead + Send>, ReplayError> {
        let mut f = std::fs::File::open(&path)
            .map_err(|e| ReplayError::Invalid(format!("cannot open '{}': {e}", path.display())))?;
        let mut magic = [0u8; 2];
        let gz = std::io::Read::read(&mut f, &mut magic).is_ok_and(|n| n == 2 && magic == [0x1f, 0x8b]);
        std::io::Seek::rewind(&mut f).map_err(|e| ReplayError::Invalid(e.to_string()))?;
        Ok(if gz {
            Box::new(std::io::BufReader::new(flate2::read::GzDecoder::new(f)))
        } else {
            Box::new(std::io::BufReader::new(f))
        })
    };
    let mut check = orderlog_replay::progress::Progress::new("import: verifying", None);
    let mut load = orderlog_replay::progress::Progress::new("import: loading", None);
    let signed = trusted.is_some();
    let (appended, checkpoint) =
        orderlog_replay::archive::import_trusting(&*opened.db.loader(), &open, trusted, &mut check, &mut load).await?;
    // Into an empty store the events are checked as they load (no separate pass counts
    // them); over a partly imported store the whole file is checked first.
    eprintln!("imported {appended} events; {} checked (hash chains, ids, count, digest)", check.done().max(appended));
    if let Some(c) = checkpoint {
        let how =
            if signed { "and its signature by the trusted key" } else { "(its signature unchecked: no --public-key)" };
        eprintln!("the events give the root of the checkpoint of {} events signed at {} {how}", c.tree_size, c.time);
        // Kept, so that what this store signs later must extend it.
        let json = serde_json::to_string(&c)?;
        opened.db.tree().keep_checkpoint(c.tree_size, json).await?;
    }
    Ok(())
}

async fn rebuild(database: &str, projection: Option<String>, all: bool) -> Result<()> {
    let opened = open_store(database).await?;
    let runners = read_models(&opened.db, opened.store.clone()).await?.runners;
    let names: Vec<&str> = runners.iter().map(|r| r.name()).collect();
    let chosen: Vec<Arc<dyn AnyRunner>> = match (&projection, all) {
        (_, true) => runners.clone(),
        (Some(name), false) => match runners.iter().find(|r| r.name() == name) {
            Some(r) => vec![r.clone()],
            None => bail!("no read model '{name}'; the read models are {}", names.join(", ")),
        },
        (None, false) => bail!("name a read model ({}) or give --all", names.join(", ")),
    };
    for runner in chosen {
        let head = opened.store.head().await?;
        let mut progress = orderlog_replay::progress::Progress::new(format!("rebuild {}", runner.name()), Some(head));
        let watched = runner.clone();
        let (done, mut finished) = tokio::sync::oneshot::channel::<()>();
        let shown = tokio::spawn(async move {
            let mut seen = 0;
            loop {
                tokio::select! {
                    _ = &mut finished => return progress,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                }
                if let Some(at) = watched.rebuild_checkpoint().await {
                    progress.advance(at.events.saturating_sub(seen));
                    seen = at.events;
                }
            }
        });
        let rebuilt = runner.rebuild().await;
        let _ = done.send(());
        let mut progress = shown.await?;
        let checkpoint = rebuilt?;
        progress.advance(checkpoint.events.saturating_sub(progress.done()));
        progress.finish();
        println!(
            "{}: rebuilt at version {} and swapped in ({} events, position {})",
            runner.name(),
            checkpoint.version,
            checkpoint.events,
            checkpoint.cursor.position
        );
    }
    Ok(())
}
