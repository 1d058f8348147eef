//! `orderlog`: the binary that wires the store, the command service and the tools.

mod demo;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use orderlog_store::{EventStore, PostgresStore, SqliteStore};

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
}

/// The embedded default store.
pub const DEFAULT_DATABASE: &str = "./orderlog.db";

/// A store as the CLI opened it.
pub struct Opened {
    pub store: Arc<dyn EventStore>,
    /// Migrations this open applied.
    pub applied: Vec<u32>,
}

/// Opens the store named by `database`: a `postgres://` URL, or a SQLite file path (the
/// default). Either way the schema is created or brought up to date.
pub async fn open_store(database: &str) -> Result<Opened> {
    if database.is_empty() {
        bail!("--database: give a SQLite file path such as {DEFAULT_DATABASE}, or a postgres:// URL");
    }
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        let store = PostgresStore::connect_url(database).await.context("cannot open the PostgreSQL store")?;
        let applied = store.applied_migrations().to_vec();
        return Ok(Opened { store: Arc::new(store), applied });
    }
    if database.contains("://") {
        bail!("--database: '{database}' is neither a postgres:// URL nor a file path");
    }
    let store =
        SqliteStore::open(PathBuf::from(database)).with_context(|| format!("cannot open the store '{database}'"))?;
    let applied = store.applied_migrations().to_vec();
    Ok(Opened { store: Arc::new(store), applied })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
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
    }
}
