//! Appends with the Merkle tree maintained beside the log against appends without, in one
//! run, on SQLite and on PostgreSQL: N writers append one event per call to their own
//! streams for a fixed time; in the maintained rounds a follower brings the stored tree up
//! to the log every 200 ms, as `orderlog serve` does. Rounds alternate (without then with,
//! with then without, …) and the median of the ratios is printed, the machine's rate
//! drifting between rounds.
//!
//! `cargo bench --bench tree [-- SECONDS]` (default 5 s per round); `ORDERLOG_BENCH_ROUNDS`
//! (default 5), `ORDERLOG_BENCH_WRITERS` (default 16), `ORDERLOG_BENCH_ONLY=sqlite|postgres`.

#[path = "support/events.rs"]
mod events;
use events::one_event_appends;

// The allocator of the `orderlog` binary, so the figures are those of the CLI.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use orderlog_replay::checkpoint::TreeFollower;
use orderlog_store::postgres::testing::TestDatabase;
use orderlog_store::{PostgresStore, SqliteStore, TreeStore};

/// Events per second that `writers` writers append in `run`; with `tree`, a follower
/// extends it every 200 ms meanwhile.
async fn appends(store: Arc<dyn TreeStore>, writers: usize, run: Duration, round: usize, tree: bool) -> f64 {
    let start = Instant::now();
    let maintainer = tree.then(|| {
        let follower = TreeFollower::new(store.clone());
        tokio::spawn(async move {
            while start.elapsed() < run {
                follower.extend().await.unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let rate = one_event_appends(store, writers, run, round).await;
    if let Some(m) = maintainer {
        m.await.unwrap();
    }
    rate
}

async fn measure(name: &str, store: Arc<dyn TreeStore>, writers: usize, run: Duration, rounds: usize) {
    // The tree is brought up to the log before each round, so no round pays for another's
    // events.
    let follower = TreeFollower::new(store.clone());
    let mut ratios = Vec::new();
    for round in 0..rounds {
        // Which goes first alternates too: the rate drifts down as the log grows.
        let rate = |tree: bool| {
            let (store, follower) = (store.clone(), &follower);
            let stream_round = round * 2 + usize::from(tree);
            async move {
                follower.extend().await.unwrap();
                appends(store, writers, run, stream_round, tree).await
            }
        };
        let (without, with) = if round % 2 == 0 {
            let without = rate(false).await;
            (without, rate(true).await)
        } else {
            let with = rate(true).await;
            (rate(false).await, with)
        };
        println!(
            "{name:<12} {writers} writers   without {without:>8.0} ev/s   with tree {with:>8.0} ev/s   ratio {:.2}",
            with / without
        );
        ratios.push(with / without);
    }
    let started = Instant::now();
    let size = follower.extend().await.unwrap();
    ratios.sort_by(f64::total_cmp);
    println!(
        "{name:<12} median ratio {:.2} ({size} events in the tree; the last catch-up {:.0} ms)",
        ratios[ratios.len() / 2],
        started.elapsed().as_secs_f64() * 1e3
    );
}

fn main() {
    let seconds: u64 =
        std::env::args().skip(1).find(|a| !a.starts_with("--")).and_then(|a| a.parse().ok()).unwrap_or(5);
    let run = Duration::from_secs(seconds);
    let rounds: usize = std::env::var("ORDERLOG_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let writers: usize = std::env::var("ORDERLOG_BENCH_WRITERS").ok().and_then(|r| r.parse().ok()).unwrap_or(16);
    let only = std::env::var("ORDERLOG_BENCH_ONLY").unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        println!("{seconds} s per round, {rounds} rounds of each, alternating");
        if only != "postgres" {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(SqliteStore::open(dir.path().join("orderlog.db")).unwrap());
            measure("SQLite", store, writers, run, rounds).await;
        }
        if only != "sqlite" {
            let db = TestDatabase::create().await;
            let store = Arc::new(PostgresStore::connect_url(&db.url_with("pool_max_size=64")).await.unwrap());
            measure("PostgreSQL", store, writers, run, rounds).await;
        }
    });
}
