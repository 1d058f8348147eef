//! `orderlog processes`: where each reactor stands and what it parked, and an operator's
//! decision to retry or skip a parked event (kept with who decided, when and why).

use anyhow::{bail, Result};
use clap::Subcommand;
use orderlog_processes::reactor::{self, Decision};

use crate::{open_store, DEFAULT_DATABASE};

/// Events counted behind a reactor at most (more shows as this many and more).
const BEHIND_COUNT_MAX: u32 = 10_000;

#[derive(Subcommand)]
pub enum ProcessesCommand {
    /// Each reactor's position, lag and state, and the events parked and not yet resolved.
    Status {
        #[arg(long, default_value = DEFAULT_DATABASE)]
        database: String,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Try a parked event again (the reactor does it at its next step).
    Retry(DecisionArgs),
    /// Skip a parked event for good (a reactor stopped at it moves on).
    Skip(DecisionArgs),
}

#[derive(clap::Args)]
pub struct DecisionArgs {
    #[arg(long, default_value = DEFAULT_DATABASE)]
    database: String,
    /// The reactor that parked the event.
    #[arg(long)]
    reactor: String,
    /// The parked event's position in the log.
    #[arg(long)]
    position: u64,
    /// Why: kept with the decision.
    #[arg(long)]
    reason: String,
    /// Who decides (default: $USER).
    #[arg(long, env = "USER", default_value = "operator")]
    actor: String,
}

pub async fn run(command: ProcessesCommand) -> Result<()> {
    match command {
        ProcessesCommand::Status { database, json } => status(&database, json).await,
        ProcessesCommand::Retry(args) => decide(args, Decision::Retry).await,
        ProcessesCommand::Skip(args) => decide(args, Decision::Skip).await,
    }
}

async fn status(database: &str, json: bool) -> Result<()> {
    let opened = open_store(database).await?;
    let db = opened.db.processes().await?;
    let mut reactors = Vec::new();
    for (name, checkpoint, updated_ms) in reactor::reactors(&*db).await? {
        let behind = opened.store.read_all(checkpoint.cursor, BEHIND_COUNT_MAX).await?.len();
        reactors.push(serde_json::json!({
            "reactor": name,
            "position": checkpoint.cursor.position,
            "events": checkpoint.events,
            "behind": behind,
            "stopped_at": checkpoint.stopped_at,
            "updated_ms": updated_ms,
        }));
    }
    let parked: Vec<_> = reactor::parked(&*db, None, 1_000)
        .await?
        .into_iter()
        .filter(|p| p.state == "parked" || p.state == "retry_requested")
        .collect();
    let leases = orderlog_processes::lease::list(&*db).await?;
    if json {
        println!("{}", serde_json::json!({"reactors": reactors, "parked": parked, "leases": leases}));
        return Ok(());
    }
    println!("{:<16} {:>10} {:>10} {:>8}  state", "reactor", "position", "events", "behind");
    for r in &reactors {
        let state = match r["stopped_at"].as_u64() {
            Some(p) => format!("stopped at parked event {p}"),
            None => "running".into(),
        };
        let n = |field: &str| r[field].as_u64().unwrap_or(0);
        println!(
            "{:<16} {:>10} {:>10} {:>8}  {state}",
            r["reactor"].as_str().unwrap_or("-"),
            n("position"),
            n("events"),
            n("behind")
        );
    }
    if reactors.is_empty() {
        println!("(no reactor has run on this database)");
    }
    println!();
    let now = chrono::Utc::now().timestamp_millis();
    println!("{:<40} {:<36} lease", "job", "led by");
    for lease in &leases {
        let left = lease.expires_ms - now;
        let state = if left > 0 { format!("expires in {:.1} s", left as f64 / 1000.0) } else { "expired".into() };
        println!("{:<40} {:<36} {state}", lease.job, lease.holder);
    }
    if leases.is_empty() {
        println!("(no job is led by any process)");
    }
    println!();
    println!("parked events waiting for a decision: {}", parked.len());
    for p in &parked {
        println!(
            "  {} at {} ({} in {}), {} tries, {}: {}",
            p.reactor, p.position, p.event_type, p.stream_id, p.attempts, p.state, p.error
        );
    }
    Ok(())
}

async fn decide(args: DecisionArgs, decision: Decision) -> Result<()> {
    if args.reason.trim().is_empty() {
        bail!("--reason: say why; it is kept with the decision");
    }
    let opened = open_store(&args.database).await?;
    let db = opened.db.processes().await?;
    if !reactor::decide(&*db, &args.reactor, args.position, decision, &args.actor, &args.reason).await? {
        bail!(
            "the event at {} parked by '{}' is not waiting for a decision (already retried or skipped); \
             `orderlog processes status` lists those that are",
            args.position,
            args.reactor
        );
    }
    let verb = match decision {
        Decision::Retry => "will be tried again at the reactor's next step",
        Decision::Skip => "is skipped",
    };
    println!(
        "the event at {} parked by '{}' {verb} (decided by {}: {})",
        args.position, args.reactor, args.actor, args.reason
    );
    Ok(())
}
