//! Where and how to connect: the options a URL gives, and how connection errors read.

use super::*;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    pub config: tokio_postgres::Config,
    pub pool_max_size: usize,
    pub pool_timeout: Duration,
    /// `orderlog_append` calls in flight at once.
    pub append_calls_max: usize,
}

impl PostgresOptions {
    /// Parses a `postgres://` or `postgresql://` URL. The query parameters `pool_max_size`,
    /// `pool_timeout_ms` and `append_calls_max` are orderlog's; the others go to the driver
    /// (`connect_timeout` in seconds, `application_name`, …).
    pub fn from_url(url: &str) -> Result<PostgresOptions, StoreError> {
        let bad = |detail: String| StoreError::Config(detail);
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut pool_max_size = POOL_MAX_SIZE_DEFAULT;
        let mut pool_timeout = Duration::from_millis(POOL_TIMEOUT_MS_DEFAULT);
        let mut append_calls_max = APPEND_CALLS_MAX_DEFAULT;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "pool_max_size" => {
                    pool_max_size = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=1_000).contains(n))
                        .ok_or_else(|| bad(format!("pool_max_size: '{value}' is not a number from 1 to 1000")))?;
                }
                "pool_timeout_ms" => {
                    let ms: u64 = value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad(format!("pool_timeout_ms: '{value}' is not a positive number")))?;
                    pool_timeout = Duration::from_millis(ms);
                }
                "append_calls_max" => {
                    append_calls_max = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=256).contains(n))
                        .ok_or_else(|| bad(format!("append_calls_max: '{value}' is not a number from 1 to 256")))?;
                }
                _ => rest.push(pair),
            }
        }
        let driver_url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
        let mut config: tokio_postgres::Config =
            driver_url.parse().map_err(|e| bad(format!("not a PostgreSQL URL ({e}): {}", redact(url))))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS_DEFAULT));
        }
        if config.get_application_name().is_none() {
            config.application_name("orderlog");
        }
        if config.get_options().is_none() {
            // orderlog's statements are small and every one has an index. Compiling one with
            // JIT (when a generic plan's estimate crosses jit_above_cost) costs tens of
            // milliseconds, and a generic plan cached while the log was small could pick a
            // sequential scan and keep it as the log grows: no JIT, no sequential scans.
            config.options("-c jit=off -c enable_seqscan=off");
        }
        Ok(PostgresOptions { config, pool_max_size, pool_timeout, append_calls_max })
    }

    /// The server and database, for messages: never the password.
    pub fn target(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let user = self.config.get_user().unwrap_or("");
        let db = self.config.get_dbname().unwrap_or(user);
        format!("PostgreSQL database '{db}' at {host}:{port} as user '{user}'")
    }
}

/// A URL with its password replaced, for messages; anything else unchanged.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// What a database error says, with its detail and hint.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = db.message().to_string();
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            text
        }
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

pub(super) fn pg(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(describe(&e))
}

/// `tokio_postgres::connect` takes a string; rebuild one from the parsed config.
pub(super) fn options_string(options: &PostgresOptions) -> String {
    let c = &options.config;
    let mut parts = Vec::new();
    for host in c.get_hosts() {
        match host {
            tokio_postgres::config::Host::Tcp(h) => parts.push(format!("host='{h}'")),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => parts.push(format!("host='{}'", p.display())),
        }
    }
    if let Some(port) = c.get_ports().first() {
        parts.push(format!("port={port}"));
    }
    if let Some(user) = c.get_user() {
        parts.push(format!("user='{user}'"));
    }
    if let Some(password) = c.get_password() {
        parts.push(format!("password='{}'", String::from_utf8_lossy(password).replace('\'', "\\'")));
    }
    if let Some(db) = c.get_dbname() {
        parts.push(format!("dbname='{db}'"));
    }
    parts.push("application_name='orderlog-listener'".into());
    parts.join(" ")
}

pub(super) fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        deadpool_postgres::PoolError::Timeout(_) => "timed out waiting for a connection".into(),
        other => other.to_string(),
    }
}
