//! Bearer API tokens with scopes.
//!
//! A token is `olt_{id}_{secret}`: the id names it in lists and logs, the secret is 32
//! random bytes. Only the SHA-256 of the whole token is stored, in `orderlog_api_tokens`
//! in the database of the log; a token is shown once, when it is made.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use deadpool_postgres::Pool;
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Carts and checkout; reading an order and stock availability.
    Shop,
    /// Stock, shipments and order actions; reading orders and inventory.
    Operations,
    /// Stream history and the event feed; reading orders. Read only.
    Audit,
    /// The event feed and reports. Read only.
    Analytics,
    /// Tokens.
    Admin,
    /// Webhook subscriptions and their delivery logs.
    Integrations,
    /// The catalog and its price lists: products, variants, prices.
    Catalog,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::Shop,
        Scope::Operations,
        Scope::Audit,
        Scope::Analytics,
        Scope::Admin,
        Scope::Integrations,
        Scope::Catalog,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Shop => "shop",
            Scope::Operations => "operations",
            Scope::Audit => "audit",
            Scope::Analytics => "analytics",
            Scope::Admin => "admin",
            Scope::Integrations => "integrations",
            Scope::Catalog => "catalog",
        }
    }

    /// This scope as the list of scopes a route accepts.
    pub fn alone(self) -> &'static [Scope] {
        match self {
            Scope::Shop => &[Scope::Shop],
            Scope::Operations => &[Scope::Operations],
            Scope::Audit => &[Scope::Audit],
            Scope::Analytics => &[Scope::Analytics],
            Scope::Admin => &[Scope::Admin],
            Scope::Integrations => &[Scope::Integrations],
            Scope::Catalog => &[Scope::Catalog],
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Scope, TokenError> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s).ok_or_else(|| {
            TokenError::Invalid(format!("unknown scope '{s}'; scopes are {}", Scope::ALL.map(Scope::as_str).join(", ")))
        })
    }
}

/// Parses `shop,operations`.
pub fn parse_scopes(list: &str) -> Result<BTreeSet<Scope>, TokenError> {
    let scopes: BTreeSet<Scope> =
        list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(Scope::from_str).collect::<Result<_, _>>()?;
    if scopes.is_empty() {
        return Err(TokenError::Invalid(format!(
            "give at least one scope: {}",
            Scope::ALL.map(Scope::as_str).join(", ")
        )));
    }
    Ok(scopes)
}

/// Who is calling, as a valid token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Recorded as the actor of every event the principal's commands write.
    pub name: String,
    pub token_id: String,
    pub scopes: BTreeSet<Scope>,
}

/// A stored token, without its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub principal: String,
    pub scopes: Vec<Scope>,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// Why the stored row is not a valid token, when it is not (it then lets nothing in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

/// A token just made: the only time its secret is shown.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct NewToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    pub token: String,
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn check_principal(principal: &str) -> Result<(), TokenError> {
    let ok = !principal.is_empty()
        && principal.len() <= 64
        && principal.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(TokenError::Invalid(format!(
            "principal '{principal}': use 1 to 64 letters, digits, '-', '_', '.' or '@' (it is recorded as the actor of events)"
        )))
    }
}

/// Why a token could not be made, read or changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The principal or the scopes asked for are not valid.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("the tokens' database: {0}")]
    Database(String),
}

impl TokenError {
    fn database(e: impl std::fmt::Display) -> TokenError {
        TokenError::Database(e.to_string())
    }
}

/// Where tokens live.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Makes a token for `principal` with `scopes`.
    async fn create(&self, principal: &str, scopes: &BTreeSet<Scope>) -> Result<NewToken, TokenError>;
    async fn list(&self) -> Result<Vec<TokenInfo>, TokenError>;
    /// Revokes the token with this id; false if there is no such token.
    async fn revoke(&self, id: &str) -> Result<bool, TokenError>;
    /// The principal of a presented token, if it is valid and not revoked.
    async fn authenticate(&self, token: &str) -> Result<Option<Principal>, TokenError>;
    /// How many tokens are not revoked.
    async fn active(&self) -> Result<usize, TokenError> {
        Ok(self.list().await?.iter().filter(|t| t.revoked_at.is_none() && t.invalid.is_none()).count())
    }
}

fn mint(principal: &str, scopes: &BTreeSet<Scope>) -> Result<(NewToken, String), TokenError> {
    check_principal(principal)?;
    if scopes.is_empty() {
        return Err(TokenError::Invalid("a token needs at least one scope".into()));
    }
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id = hex::encode(id);
    let token = format!("olt_{id}_{}", hex::encode(secret));
    let info = TokenInfo {
        id,
        principal: principal.to_string(),
        scopes: scopes.iter().copied().collect(),
        created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        revoked_at: None,
        invalid: None,
    };
    let hash = digest(&token);
    Ok((NewToken { info, token }, hash))
}

fn scopes_text(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

/// The scopes of a stored token row whose principal and scopes are both valid.
fn stored_scopes(principal: &str, scopes: &str) -> Result<BTreeSet<Scope>, TokenError> {
    check_principal(principal)?;
    parse_scopes(scopes)
}

/// The principal of a stored token row, or none when the row cannot be a valid token (its
/// scopes empty or unknown, or its principal malformed, as by a hand edit): such a token
/// lets nothing in, and the cause is logged.
fn principal_of(id: String, name: String, scopes: &str) -> Option<Principal> {
    match stored_scopes(&name, scopes) {
        Ok(scopes) => Some(Principal { name, token_id: id, scopes }),
        Err(e) => {
            tracing::warn!(token_id = %id, error = %e, "a stored token is invalid and was refused");
            None
        }
    }
}

/// A stored token row as listed: a row that cannot be a valid token is listed with what is
/// wrong with it, so one bad row does not hide the others.
fn info_of(id: String, principal: String, scopes: &str, created_at: String, revoked_at: Option<String>) -> TokenInfo {
    let (scopes, invalid) = match stored_scopes(&principal, scopes) {
        Ok(scopes) => (scopes.into_iter().collect(), None),
        Err(e) => (Vec::new(), Some(format!("this token lets nothing in: {e} (stored scopes '{scopes}')"))),
    };
    TokenInfo { id, principal, scopes, created_at, revoked_at, invalid }
}

/// Tokens in the SQLite file of the log.
pub struct SqliteTokens {
    conn: Mutex<Connection>,
}

impl SqliteTokens {
    /// Opens the tokens of the orderlog database at `path` (its migrations create the table:
    /// open the event store on it first).
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteTokens, TokenError> {
        let conn = Connection::open(path.as_ref()).map_err(TokenError::database)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(TokenError::database)?;
        Ok(SqliteTokens { conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, TokenError> {
        f(&self.conn.lock().expect("tokens lock")).map_err(TokenError::database)
    }
}

#[async_trait]
impl TokenStore for SqliteTokens {
    async fn create(&self, principal: &str, scopes: &BTreeSet<Scope>) -> Result<NewToken, TokenError> {
        let (new, hash) = mint(principal, scopes)?;
        let i = &new.info;
        self.with(|c| {
            c.execute(
                "INSERT INTO orderlog_api_tokens (id, principal, scopes, token_sha256, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![i.id, i.principal, scopes_text(&i.scopes), hash, i.created_at],
            )
        })?;
        Ok(new)
    }

    async fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        let rows: Vec<(String, String, String, String, Option<String>)> = self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, principal, scopes, created_at, revoked_at FROM orderlog_api_tokens ORDER BY created_at, id",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?;
            rows.collect()
        })?;
        Ok(rows
            .into_iter()
            .map(|(id, principal, scopes, created_at, revoked_at)| {
                info_of(id, principal, &scopes, created_at, revoked_at)
            })
            .collect())
    }

    async fn revoke(&self, id: &str) -> Result<bool, TokenError> {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let changed = self.with(|c| {
            c.execute(
                "UPDATE orderlog_api_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id, now],
            )
        })?;
        Ok(changed > 0)
    }

    async fn authenticate(&self, token: &str) -> Result<Option<Principal>, TokenError> {
        let hash = digest(token);
        let row: Option<(String, String, String)> = self.with(|c| {
            c.prepare_cached(
                "SELECT id, principal, scopes FROM orderlog_api_tokens WHERE token_sha256 = ?1 AND revoked_at IS NULL",
            )?
            .query_row([hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
        })?;
        Ok(row.and_then(|(id, name, scopes)| principal_of(id, name, &scopes)))
    }
}

/// Tokens in the PostgreSQL database of the log.
pub struct PostgresTokens {
    pool: Pool,
}

impl PostgresTokens {
    /// The tokens of the orderlog database behind `pool` (its migrations create the table).
    pub fn new(pool: Pool) -> PostgresTokens {
        PostgresTokens { pool }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, TokenError> {
        self.pool.get().await.map_err(TokenError::database)
    }
}

#[async_trait]
impl TokenStore for PostgresTokens {
    async fn create(&self, principal: &str, scopes: &BTreeSet<Scope>) -> Result<NewToken, TokenError> {
        let (new, hash) = mint(principal, scopes)?;
        let i = &new.info;
        self.client()
            .await?
            .execute(
                "INSERT INTO orderlog_api_tokens (id, principal, scopes, token_sha256, created_at) VALUES ($1, $2, $3, $4, $5)",
                &[&i.id, &i.principal, &scopes_text(&i.scopes), &hash, &i.created_at],
            )
            .await
            .map_err(TokenError::database)?;
        Ok(new)
    }

    async fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, principal, scopes, created_at, revoked_at FROM orderlog_api_tokens ORDER BY created_at, id",
                &[],
            )
            .await
            .map_err(TokenError::database)?;
        Ok(rows.iter().map(|r| info_of(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect())
    }

    async fn revoke(&self, id: &str) -> Result<bool, TokenError> {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let changed = self
            .client()
            .await?
            .execute("UPDATE orderlog_api_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1", &[&id, &now])
            .await
            .map_err(TokenError::database)?;
        Ok(changed > 0)
    }

    async fn authenticate(&self, token: &str) -> Result<Option<Principal>, TokenError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, principal, scopes FROM orderlog_api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL",
            )
            .await
            .map_err(TokenError::database)?;
        let row = client.query_opt(&stmt, &[&digest(token)]).await.map_err(TokenError::database)?;
        Ok(row.and_then(|r| principal_of(r.get(0), r.get(1), r.get(2))))
    }
}

/// Remembers valid tokens for a short while, so a request does not cost a database round
/// trip to authenticate. A token revoked through this cache stops at once; one revoked
/// elsewhere (another process, `orderlog token revoke`) within [`CachedTokens::TTL`].
pub struct CachedTokens {
    inner: Arc<dyn TokenStore>,
    cache: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl CachedTokens {
    pub const TTL: Duration = Duration::from_secs(2);
    const ENTRIES_MAX: usize = 10_000;

    pub fn new(inner: Arc<dyn TokenStore>) -> CachedTokens {
        CachedTokens { inner, cache: Mutex::new(HashMap::new()) }
    }
}

#[async_trait]
impl TokenStore for CachedTokens {
    async fn create(&self, principal: &str, scopes: &BTreeSet<Scope>) -> Result<NewToken, TokenError> {
        self.inner.create(principal, scopes).await
    }

    async fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        self.inner.list().await
    }

    async fn revoke(&self, id: &str) -> Result<bool, TokenError> {
        let revoked = self.inner.revoke(id).await?;
        self.cache.lock().expect("token cache").retain(|_, (p, _)| p.token_id != id);
        Ok(revoked)
    }

    async fn authenticate(&self, token: &str) -> Result<Option<Principal>, TokenError> {
        let key = digest(token);
        if let Some((principal, at)) = self.cache.lock().expect("token cache").get(&key) {
            if at.elapsed() < Self::TTL {
                return Ok(Some(principal.clone()));
            }
        }
        let found = self.inner.authenticate(token).await?;
        let mut cache = self.cache.lock().expect("token cache");
        match &found {
            Some(principal) => {
                if cache.len() >= Self::ENTRIES_MAX {
                    cache.clear();
                }
                cache.insert(key, (principal.clone(), Instant::now()));
            }
            None => drop(cache.remove(&key)),
        }
        Ok(found)
    }

    async fn active(&self) -> Result<usize, TokenError> {
        self.inner.active().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_are_stored_as_hashes_and_revocation_takes_effect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        orderlog_store::SqliteStore::open(&path).unwrap();
        let tokens = SqliteTokens::open(&path).unwrap();
        let made = tokens.create("shop-frontend", &parse_scopes("shop").unwrap()).await.unwrap();
        assert!(made.token.starts_with(&format!("olt_{}_", made.info.id)));
        let stored: String = Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT group_concat(id || principal || scopes || token_sha256) FROM orderlog_api_tokens",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!stored.contains(&made.token[made.token.len() - 64..]), "the secret is not stored");
        let principal = tokens.authenticate(&made.token).await.unwrap().unwrap();
        assert_eq!((principal.name.as_str(), principal.scopes.len()), ("shop-frontend", 1));
        assert_eq!(tokens.authenticate("olt_nope").await.unwrap(), None);
        assert!(tokens.revoke(&made.info.id).await.unwrap());
        assert_eq!(tokens.authenticate(&made.token).await.unwrap(), None);
        assert!(!tokens.revoke("missing").await.unwrap());
        assert_eq!(tokens.active().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn the_cache_forgets_a_token_revoked_through_it_at_once() {
        let dir = tempfile::tempdir().unwrap();
        orderlog_store::SqliteStore::open(dir.path().join("t.db")).unwrap();
        let tokens = CachedTokens::new(Arc::new(SqliteTokens::open(dir.path().join("t.db")).unwrap()));
        let made = tokens.create("a", &parse_scopes("audit").unwrap()).await.unwrap();
        assert!(tokens.authenticate(&made.token).await.unwrap().is_some());
        assert!(tokens.authenticate(&made.token).await.unwrap().is_some(), "from the cache");
        tokens.revoke(&made.info.id).await.unwrap();
        assert_eq!(tokens.authenticate(&made.token).await.unwrap(), None);
    }

    #[test]
    fn bad_scopes_and_principals_are_named() {
        assert!(parse_scopes("shop,root").unwrap_err().to_string().contains("unknown scope 'root'"));
        assert!(parse_scopes(" , ").unwrap_err().to_string().contains("at least one scope"));
        assert!(check_principal("a b").unwrap_err().to_string().contains("principal 'a b'"));
    }
}
