//! `orderlog audit watch`: an auditor that holds the server to what it signed, like a
//! Certificate Transparency monitor. It fetches the latest signed checkpoint, checks its
//! signature with the trusted key and that it extends the last checkpoint it trusted (a
//! consistency proof from the server, checked here against the root it kept), stores it in
//! its own directory, and alarms — a log line, exit code 2 and, if given, a POST to an alarm
//! URL — when the server's signed history shrinks, forks or cannot be proven to extend.
//! Its directory must be somewhere the server's database writers cannot reach.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use orderlog_replay::checkpoint::{parse_public_key, Checkpoint};
use orderlog_store::merkle::{leaf_hash, verify_consistency, Frontier, Hash};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Exit code of an alarm.
pub const ALARM_EXIT: i32 = 2;
/// Bytes of a server's answer the auditor reads at most.
const ANSWER_BYTES_MAX: u64 = 64 << 20;
/// Events per page read from the feed.
const FEED_PAGE_EVENTS: u32 = 1_000;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct WatchArgs {
    /// Where the trusted checkpoints are kept (created if absent), one file per size.
    #[arg(long)]
    checkpoints: PathBuf,
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: String,
    /// An API token with the `audit` scope.
    #[arg(long, env = "ORDERLOG_AUDIT_TOKEN", hide_env_values = true)]
    token: String,
    /// The server's public key (64 hex digits, as `keys create` printed and GET
    /// /checkpoints/key serves); checkpoints signed by any other key alarm.
    #[arg(long)]
    public_key: String,
    /// Seconds between two checks.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    every_secs: u64,
    /// Check once and exit (0: consistent, 2: alarm), e.g. from cron.
    #[arg(long)]
    once: bool,
    /// On an alarm, POST it as JSON here (http://…) as well.
    #[arg(long)]
    alarm_url: Option<String>,
    /// Also read the event feed (GET /events) each check and recompute the signed root from
    /// the events the server serves: catches event rows rewritten under an intact tree,
    /// and names the first event that differs from what this auditor read before (it keeps
    /// each event's leaf hash, 40 bytes an event, in --checkpoints). Reads the whole log.
    #[arg(long)]
    events: bool,
}

/// What one check found.
enum Finding {
    Trusted(Checkpoint),
    Unchanged(u64),
    Alarm(String),
}

pub async fn watch(args: WatchArgs) -> Result<i32> {
    let key = parse_public_key(&args.public_key).context("--public-key")?;
    let server = Url::parse(&args.url).context("--url")?;
    let alarm_to = args.alarm_url.as_deref().map(Url::parse).transpose().context("--alarm-url")?;
    std::fs::create_dir_all(&args.checkpoints)
        .with_context(|| format!("--checkpoints: cannot create '{}'", args.checkpoints.display()))?;
    loop {
        let finding = match check(&server, &args.token, &key, &args.checkpoints, args.events).await {
            Ok(finding) => finding,
            Err(e) if args.once => return Err(e),
            Err(e) => {
                // The server not answering is not evidence of a rewrite; try again.
                tracing::warn!(error = %format!("{e:#}"), "audit: no answer from the server");
                eprintln!("audit: no answer from the server: {e:#}");
                tokio::time::sleep(Duration::from_secs(args.every_secs)).await;
                continue;
            }
        };
        match finding {
            Finding::Trusted(c) => println!(
                "audit: trusted the checkpoint of {} events signed at {} (root {})",
                c.tree_size, c.time, c.root_hash
            ),
            Finding::Unchanged(size) => println!("audit: the log still has the {size} events last trusted"),
            Finding::Alarm(why) => {
                tracing::error!(alarm = %why, "audit: ALARM");
                eprintln!("audit: ALARM: {why}");
                if let Some(to) = &alarm_to {
                    let body = serde_json::json!({"alarm": why, "server": args.url, "time": chrono::Utc::now()});
                    if let Err(e) = request(to, "POST", None, Some(&body.to_string())).await {
                        eprintln!("audit: the alarm could not be posted to {}: {e:#}", to.text);
                    }
                }
                return Ok(ALARM_EXIT);
            }
        }
        if args.once {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_secs(args.every_secs)).await;
    }
}

/// The largest trusted checkpoint in `dir`.
fn last_trusted(dir: &Path) -> Result<Option<Checkpoint>> {
    let mut best: Option<Checkpoint> = None;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read '{}'", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let c: Checkpoint =
            serde_json::from_str(&text).with_context(|| format!("'{}' is not a checkpoint", path.display()))?;
        if best.as_ref().is_none_or(|b| c.tree_size > b.tree_size) {
            best = Some(c);
        }
    }
    Ok(best)
}

fn keep(dir: &Path, c: &Checkpoint) -> Result<()> {
    let path = dir.join(format!("checkpoint-{:020}.json", c.tree_size));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(c)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

fn root(hex_root: &str, what: &str) -> Result<Hash, String> {
    hex::decode(hex_root).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| format!("{what} is not 32 bytes of hex"))
}

async fn check(
    server: &Url,
    token: &str,
    key: &ed25519_dalek::VerifyingKey,
    dir: &Path,
    events: bool,
) -> Result<Finding> {
    let (status, body) = request(server, "GET", Some(("/checkpoints/latest", token)), None).await?;
    // A server that refuses to sign because its own log no longer extends a checkpoint it
    // signed has had its history rewritten (an insider who covers up while the server
    // signs can leave it there), and one that finds its stored tree altered under it has
    // had its tables rewritten: that is the finding, not a failure to check.
    if status == 409 && (body.contains("does not extend the checkpoint") || body.contains("its tables were altered")) {
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|p| p["detail"].as_str().map(str::to_string))
            .unwrap_or(body);
        return Ok(Finding::Alarm(format!("the server refuses to sign its log: {detail}")));
    }
    if status != 200 {
        bail!("GET /checkpoints/latest answered {status}: {body}");
    }
    let latest: Checkpoint =
        serde_json::from_str(&body).context("GET /checkpoints/latest did not answer a checkpoint")?;
    if let Err(e) = latest.check_signature(key) {
        return Ok(Finding::Alarm(format!(
            "the latest checkpoint (of {} events) is not trustworthy: {e}",
            latest.tree_size
        )));
    }
    let finding = check_history(server, token, dir, &latest).await?;
    if events && !matches!(finding, Finding::Alarm(_)) {
        if let Some(alarm) = check_events(server, token, dir, &latest).await? {
            return Ok(Finding::Alarm(alarm));
        }
    }
    if let Finding::Trusted(c) = &finding {
        keep(dir, c)?;
    }
    Ok(finding)
}

/// Where the auditor keeps each event's position and leaf hash from its last check of the
/// feed.
const LEAVES_FILE: &str = "leaves.bin";

/// Reads the feed's first `latest.tree_size` events and checks that their hashes give the
/// signed root; on a mismatch, the alarm names the first event that differs from the
/// leaves kept at the last check. Keeps the leaves when they hold.
async fn check_events(server: &Url, token: &str, dir: &Path, latest: &Checkpoint) -> Result<Option<String>> {
    let mut leaves: Vec<(u64, Hash)> = Vec::with_capacity(latest.tree_size as usize);
    let mut frontier = Frontier::new(0, &[]);
    let mut after = String::new();
    while (leaves.len() as u64) < latest.tree_size {
        let from = if after.is_empty() { String::new() } else { format!("&after={after}") };
        let page = get(server, &format!("/events?limit={FEED_PAGE_EVENTS}{from}"), token).await?;
        let before = leaves.len();
        for line in page.lines().filter(|l| !l.trim().is_empty()) {
            if leaves.len() as u64 == latest.tree_size {
                break;
            }
            let event: serde_json::Value = serde_json::from_str(line).context("a feed line is not JSON")?;
            let position = event["position"].as_u64().context("a feed line without a position")?;
            let hash = hex::decode(event["hash"].as_str().unwrap_or_default())
                .with_context(|| format!("the event at position {position} has a hash that is not hex"))?;
            let leaf = leaf_hash(&hash);
            frontier.add(leaf);
            leaves.push((position, leaf));
            after = event["cursor"].as_str().context("a feed line without a cursor")?.to_string();
        }
        if leaves.len() == before {
            break;
        }
    }
    let kept = std::fs::read(dir.join(LEAVES_FILE)).unwrap_or_default();
    let kept: Vec<(u64, Hash)> = kept
        .chunks_exact(40)
        .map(|c| (u64::from_le_bytes(c[..8].try_into().expect("8 bytes")), c[8..].try_into().expect("32 bytes")))
        .collect();
    if (leaves.len() as u64) < latest.tree_size || hex::encode(frontier.root()) != latest.root_hash {
        let first = kept
            .iter()
            .zip(&leaves)
            .position(|(a, b)| a != b)
            .or_else(|| (leaves.len() < kept.len()).then_some(leaves.len()));
        let place = match first.and_then(|i| kept.get(i)) {
            Some((position, _)) => {
                format!("; the first event that differs from the last check is at position {position}")
            }
            None => String::new(),
        };
        return Ok(Some(format!(
            "the server's events do not give the root it signed for its first {} events (at {}): event rows were \
             rewritten under its tree{place}",
            latest.tree_size, latest.time
        )));
    }
    let mut bytes = Vec::with_capacity(leaves.len() * 40);
    for (position, leaf) in &leaves {
        bytes.extend_from_slice(&position.to_le_bytes());
        bytes.extend_from_slice(leaf);
    }
    let tmp = dir.join(format!("{LEAVES_FILE}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(LEAVES_FILE))?;
    Ok(None)
}

/// The checkpoint-level checks: the signed history neither shrinks nor forks, and the
/// latest checkpoint is proven to extend the last one trusted.
async fn check_history(server: &Url, token: &str, dir: &Path, latest: &Checkpoint) -> Result<Finding> {
    let latest = latest.clone();
    let Some(trusted) = last_trusted(dir)? else {
        return Ok(Finding::Trusted(latest));
    };
    if latest.tree_size < trusted.tree_size {
        return Ok(Finding::Alarm(format!(
            "the server's latest checkpoint has {} events, fewer than the {} it signed at {}: events were removed",
            latest.tree_size, trusted.tree_size, trusted.time
        )));
    }
    if latest.tree_size == trusted.tree_size {
        if latest.root_hash != trusted.root_hash {
            return Ok(Finding::Alarm(format!(
                "two checkpoints of {} events with different roots (signed at {} and at {}): the history forked",
                latest.tree_size, trusted.time, latest.time
            )));
        }
        return Ok(Finding::Unchanged(latest.tree_size));
    }
    let path = format!("/proofs/consistency?from={}&to={}", trusted.tree_size, latest.tree_size);
    let proof: serde_json::Value =
        serde_json::from_str(&get(server, &path, token).await?).context("the consistency proof cannot be read")?;
    let held = (|| -> Result<(), String> {
        let hashes = proof["proof"]
            .as_array()
            .ok_or("the consistency proof has no list of hashes")?
            .iter()
            .map(|h| root(h.as_str().unwrap_or_default(), "a proof hash"))
            .collect::<Result<Vec<_>, _>>()?;
        let (old, new) = (root(&trusted.root_hash, "the trusted root")?, root(&latest.root_hash, "the latest root")?);
        verify_consistency(trusted.tree_size, latest.tree_size, &old, &new, &hashes).map_err(|e| e.to_string())
    })();
    if let Err(why) = held {
        return Ok(Finding::Alarm(format!(
            "the log of {} events (signed at {}) does not extend the checkpoint of {} events trusted since {}: {why}",
            latest.tree_size, latest.time, trusted.tree_size, trusted.time
        )));
    }
    Ok(Finding::Trusted(latest))
}

/// An `http://host:port/base` URL.
struct Url {
    text: String,
    host: String,
    base: String,
}

impl Url {
    fn parse(text: &str) -> Result<Url> {
        let Some(rest) = text.strip_prefix("http://") else {
            bail!("'{text}' is not an http:// URL (this auditor speaks plain HTTP; reach a TLS server through a local proxy)")
        };
        let (host, base) = rest.split_once('/').map_or((rest, ""), |(h, b)| (h, b));
        if host.is_empty() {
            bail!("'{text}' names no host");
        }
        let base = format!("/{}", base.trim_end_matches('/'));
        Ok(Url { text: text.to_string(), host: host.to_string(), base: base.trim_end_matches('/').to_string() })
    }
}

async fn get(server: &Url, path: &str, token: &str) -> Result<String> {
    let (status, body) = request(server, "GET", Some((path, token)), None).await?;
    if status != 200 {
        bail!("GET {path} answered {status}: {body}");
    }
    Ok(body)
}

/// One HTTP/1.1 request with `Connection: close`; the status and the body.
async fn request(to: &Url, method: &str, get: Option<(&str, &str)>, body: Option<&str>) -> Result<(u16, String)> {
    let exchange = async {
        let host = if to.host.contains(':') { to.host.clone() } else { format!("{}:80", to.host) };
        let mut stream = tokio::net::TcpStream::connect(&host).await.with_context(|| format!("cannot reach {host}"))?;
        let (path, auth) = match get {
            Some((path, token)) => (format!("{}{path}", to.base), format!("Authorization: Bearer {token}\r\n")),
            None => (if to.base.is_empty() { "/".into() } else { to.base.clone() }, String::new()),
        };
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            to.host,
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.take(ANSWER_BYTES_MAX).read_to_end(&mut answer).await?;
        let text = String::from_utf8_lossy(&answer);
        let (head, rest) = text.split_once("\r\n\r\n").context("the answer has no end of headers")?;
        let status: u16 =
            head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("the answer has no status")?;
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        Ok::<_, anyhow::Error>((status, if chunked { dechunk(rest) } else { rest.to_string() }))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.context("the server did not answer in time")?
}

/// The body of a chunked answer.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}
