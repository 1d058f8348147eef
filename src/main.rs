//! `orderlog`: the binary that wires the store, the command service and the tools.

mod demo;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use orderlog_store::{EventStore, SqliteStore};

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
        /// A SQLite file path.
        #[arg(long, default_value = DEFAULT_DATABASE)]
        database: String,
    },
}

/// The embedded default store.
pub const DEFAULT_DATABASE: &str = "./orderlog.db";

/// Opens the store named by `database`: a SQLite file path (the default).
pub fn open_store(database: &str) -> Result<Arc<SqliteStore>> {
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        bail!("PostgreSQL stores are not supported by this build yet; give a SQLite file path");
    }
    if database.is_empty() {
        bail!("--database: give a SQLite file path such as {DEFAULT_DATABASE}");
    }
    let store =
        SqliteStore::open(PathBuf::from(database)).with_context(|| format!("cannot open the store '{database}'"))?;
    Ok(Arc::new(store))
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
            let store = open_store(&database)?;
            let applied = store.applied_migrations();
            if applied.is_empty() {
                println!("{database}: schema is up to date (head position {})", store.head().await?);
            } else {
                println!("{database}: applied migrations {applied:?}");
            }
            Ok(())
        }
    }
}
