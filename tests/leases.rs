//! One process per job, with real processes on one PostgreSQL database: three `orderlog
//! serve` and one `orderlog project` share the jobs (each read model, the timer, the webhook
//! reactor) so that each has one leader; the leader of a read model is killed with SIGKILL
//! while a shop (`orderlog demo`, itself under the leases) writes to the log; another
//! process takes the job over within the lease's life, and the read models end equal to the fold of the log (nothing skipped, nothing
//! folded twice).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const JOBS: [&str; 5] =
    ["projection:inventory_levels", "projection:order_status", "projection:deadlines", "timer", "reactor:webhooks"];

/// Each job's leader (the process id in its holder name) and whether its lease is live.
fn leaders(url: &str) -> BTreeMap<String, (u32, bool)> {
    let out = orderlog(&["processes", "status", "--database", url, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    status["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let holder = l["holder"].as_str().unwrap();
            let pid = holder.split(':').nth(1).unwrap().parse().unwrap();
            (l["job"].as_str().unwrap().to_string(), (pid, l["expires_ms"].as_i64().unwrap() > now))
        })
        .collect()
}

fn project(url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_orderlog"))
        .args(["project", "--database", url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn each_job_has_one_leader_and_another_takes_over_when_it_is_killed() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(orderlog_store::postgres::testing::TestDatabase::create());
    let url = db.url.clone();
    assert!(orderlog(&["migrate", "--database", &url]).status.success());
    assert!(orderlog(&["token", "create", "--database", &url, "--principal", "x", "--scopes", "audit"])
        .status
        .success());
    let mut servers: Vec<Server> = (0..3).map(|_| serve(&url, &[], Stdio::null())).collect();
    let mut projector = project(&url);
    let mut pids: BTreeSet<u32> = servers.iter().map(|s| s.child.id()).collect();
    pids.insert(projector.id());

    let started = Instant::now();
    let mut led = leaders(&url);
    while !JOBS.iter().all(|j| led.get(*j).is_some_and(|(_, live)| *live)) {
        assert!(started.elapsed() < Duration::from_secs(30), "not every job found a leader: {led:?}");
        std::thread::sleep(Duration::from_millis(200));
        led = leaders(&url);
    }
    for job in JOBS {
        assert!(pids.contains(&led[job].0), "{job} is led by a process of this test: {led:?}");
    }

    // A shop writes while the read models' leader dies mid-batch.
    let shop = Command::new(env!("CARGO_BIN_EXE_orderlog"))
        .args(["demo", "--database", &url, "--orders", "60", "--shoppers", "4", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The shop is an orderlog process too: it may take over a job.
    pids.insert(shop.id());
    std::thread::sleep(Duration::from_millis(1_500));
    let victim = leaders(&url)["projection:order_status"].0;
    let killed_at = Instant::now();
    if let Some(server) = servers.iter_mut().find(|s| s.child.id() == victim) {
        server.child.kill().unwrap();
        server.child.wait().unwrap();
    } else {
        assert_eq!(projector.id(), victim);
        projector.kill().unwrap();
        projector.wait().unwrap();
    }
    let takeover = loop {
        let now = leaders(&url);
        if let Some((pid, true)) = now.get("projection:order_status") {
            if *pid != victim {
                assert!(pids.contains(pid));
                break killed_at.elapsed();
            }
        }
        assert!(killed_at.elapsed() < Duration::from_secs(20), "nobody took over: {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("leader takeover after SIGKILL: {} ms", takeover.as_millis());
    assert!(takeover < Duration::from_secs(10), "took {takeover:?}");

    // The shop's own check: every read model equals the fold of the whole log.
    let out_pid = shop.id();
    let out = shop.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for model in report["read_models"].as_array().unwrap() {
        assert_eq!(model["matches_log"], true, "{model}");
    }
    assert_eq!(report["oversold_units"], 0);
    // Every job is led by a live process again (the shop gave up its leases when it ended).
    let settled = Instant::now();
    loop {
        let led = leaders(&url);
        let live = |job: &str| led.get(job).is_some_and(|(pid, live)| *live && *pid != victim && *pid != out_pid);
        if JOBS.iter().all(|j| live(j)) {
            break;
        }
        assert!(settled.elapsed() < Duration::from_secs(20), "a job has no live leader: {led:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = projector.kill();
    let _ = projector.wait();
}
