//! Who is calling, and what they may do.
//!
//! Three roles ([`Role`]): **admin** may do everything; **agent** may register and heartbeat
//! services only on the hosts its patterns match; **reader** may read. Tokens live in the
//! database as the SHA-256 of their secret, so that every replica accepts them and a copy of
//! the database gives no usable token; [`Tokens`] holds them in memory, refreshed from the
//! database every `flush_interval` (a revocation reaches every replica within that). Two more
//! tokens come from the data directory or the configuration of each server: the admin token
//! (`admin.token`) and the local agent token (`agent.token`, an agent for any host).
//!
//! A request carries its token as `Authorization: Bearer <secret>` (or, on the
//! Cinder-compatible API, `X-Auth-Token`). The decisions ([`Tokens::authorize`]) know nothing
//! of HTTP: both front ends map a [`Denied`] to their own error body.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use globset::{Glob, GlobSet, GlobSetBuilder};
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::model::{Actor, Role, TokenRecord};

/// Name of the admin token of the data directory or the configuration.
pub const ADMIN_NAME: &str = "admin";
/// Name of the agent token of the data directory or the configuration.
pub const AGENT_NAME: &str = "agent";
/// Longest token name.
const MAX_NAME: usize = 64;
/// Most host patterns on one token.
const MAX_PATTERNS: usize = 64;

/// What one token may do.
#[derive(Debug)]
pub struct Grant {
    pub name: String,
    pub role: Role,
    /// An agent's host patterns, as given; empty: any host.
    pub patterns: Vec<String>,
    matcher: Option<GlobSet>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Grant {
    fn new(
        name: String,
        role: Role,
        patterns: Vec<String>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<Grant, String> {
        let matcher = if patterns.is_empty() || patterns.iter().any(|p| p == "*") {
            None
        } else {
            Some(host_matcher(&patterns)?)
        };
        Ok(Grant {
            name,
            role,
            patterns,
            matcher,
            expires_at,
        })
    }

    /// Whether this token may write services of `host`.
    pub fn covers(&self, host: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Reader => false,
            Role::Agent => self.matcher.as_ref().is_none_or(|m| m.is_match(host)),
        }
    }

    /// Whether this token may write services on any host (admin, or an agent for `*`).
    pub fn covers_every_host(&self) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Reader => false,
            Role::Agent => self.matcher.is_none(),
        }
    }

    fn hosts_text(&self) -> String {
        if self.patterns.is_empty() {
            "*".into()
        } else {
            self.patterns.join(", ")
        }
    }
}

/// Checks host patterns: globs (`*`, `?`, `[...]`), case-sensitive, as a host is.
fn host_matcher(patterns: &[String]) -> Result<GlobSet, String> {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern).map_err(|e| format!("host pattern {pattern:?}: {e}"))?;
        set.add(glob);
    }
    set.build().map_err(|e| e.to_string())
}

/// Checks a new token's name and host patterns, for `POST /v1/tokens`.
pub fn check_token(name: &str, role: Role, patterns: &[String]) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "a token name is 1 to {MAX_NAME} letters, digits, '-', '_' or '.'"
        ));
    }
    if name.starts_with('.') {
        return Err("a token name does not start with '.'".into());
    }
    if name == ADMIN_NAME || name == AGENT_NAME {
        return Err(format!(
            "the name {name:?} is the server's own {name} token's; choose another"
        ));
    }
    if role != Role::Agent && !patterns.is_empty() {
        return Err(format!(
            "only an agent token has host patterns; a {} token has none",
            role.as_str()
        ));
    }
    if role == Role::Agent && patterns.is_empty() {
        return Err(
            "an agent token names the hosts it may write: one or more host patterns \
             (`stor-*`, one host), or `*` for every host"
                .into(),
        );
    }
    if patterns.len() > MAX_PATTERNS {
        return Err(format!("at most {MAX_PATTERNS} host patterns"));
    }
    if patterns
        .iter()
        .any(|p| p.is_empty() || p.len() > 255 || p.chars().any(char::is_control))
    {
        return Err("a host pattern is 1 to 255 characters, none of them control".into());
    }
    host_matcher(patterns).map(|_| ())
}

/// A new secret: 256 random bits, hex, with a prefix that tells what it is when found in a
/// log or a file.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("vigil_{hex}")
}

/// SHA-256 of a secret.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// SHA-256 of a secret as stored: lowercase hex.
pub fn hash(secret: &str) -> String {
    digest(secret).iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The caller of one request: its token's grant, if it brought a valid one, and its address.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub grant: Option<Arc<Grant>>,
    pub address: Option<String>,
}

impl Caller {
    /// For the history: the token's name and the address.
    pub fn actor(&self) -> Actor {
        Actor {
            name: self.grant.as_ref().map(|g| g.name.clone()),
            address: self.address.clone(),
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy)]
pub enum Need<'a> {
    /// A read (list, show, events, stream, diagnosis, metrics when protected).
    Read,
    /// A read that needs a reader or admin token whatever `anonymous_read` says (`/metrics`
    /// with `metrics.require_token`).
    TokenRead,
    /// An admin call.
    Admin,
    /// Registering or heartbeating a service of this host.
    Write { host: &'a str },
}

/// Why a request may not do what it asks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Denied {
    /// No token, where one is needed (401 `unauthorized`).
    #[error("{0}")]
    NoToken(String),
    /// A token that is not (or no longer) valid (401 `unauthorized`).
    #[error("{0}")]
    BadToken(String),
    /// A valid token whose role may not do this (403 `forbidden`).
    #[error("{0}")]
    Forbidden(String),
    /// An agent token whose patterns do not match the host (403 `host_not_allowed`).
    #[error("{0}")]
    HostNotAllowed(String),
}

/// What may be done without a token (`[auth]`).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub anonymous_read: bool,
    pub open_registration: bool,
}

/// The database's tokens by the SHA-256 of their secret, and the count of this server's own
/// changes to them.
type Stored = (HashMap<[u8; 32], Arc<Grant>>, u64);

/// The tokens this server accepts.
pub struct Tokens {
    /// The admin and agent tokens of this server's data directory or configuration.
    fixed: Vec<([u8; 32], Arc<Grant>)>,
    /// The database's tokens, by the SHA-256 of their secret; and how many times this server
    /// changed them itself (a refresh read before such a change must not undo it).
    stored: RwLock<Stored>,
    policy: Policy,
}

impl Tokens {
    pub fn new(admin_secret: &str, agent_secret: Option<&str>, policy: Policy) -> Tokens {
        let mut fixed = vec![(
            digest(admin_secret),
            Arc::new(
                Grant::new(ADMIN_NAME.into(), Role::Admin, Vec::new(), None).expect("no patterns"),
            ),
        )];
        if let Some(secret) = agent_secret {
            fixed.push((
                digest(secret),
                Arc::new(
                    Grant::new(AGENT_NAME.into(), Role::Agent, Vec::new(), None)
                        .expect("no patterns"),
                ),
            ));
        }
        Tokens {
            fixed,
            stored: RwLock::new((HashMap::new(), 0)),
            policy,
        }
    }

    /// How many changes this server made itself: read before reading the database, passed
    /// to [`Tokens::replace`].
    pub fn generation(&self) -> u64 {
        self.stored.read().1
    }

    /// Takes the database's tokens as read after `generation`: new ones are accepted, revoked
    /// ones no longer. If this server made or revoked one since, the reading may predate it
    /// and is dropped (the next refresh comes within `flush_interval`). A row this version
    /// cannot read (a bad hash or pattern) is left out, and said.
    pub fn replace(&self, records: &[TokenRecord], generation: u64) {
        let mut map = HashMap::with_capacity(records.len());
        for record in records {
            let Some(key) = parse_hash(&record.hash) else {
                tracing::warn!(token = %record.name, "a stored token has a malformed hash; it is refused");
                continue;
            };
            match Grant::new(
                record.name.clone(),
                record.role,
                record.hosts.clone(),
                record.expires_at,
            ) {
                Ok(grant) => {
                    map.insert(key, Arc::new(grant));
                }
                Err(err) => {
                    tracing::warn!(token = %record.name, %err, "a stored token cannot be read; it is refused");
                }
            }
        }
        let mut stored = self.stored.write();
        if stored.1 == generation {
            stored.0 = map;
        }
    }

    /// Adds one token at once (this server created it; the others find it at their next
    /// refresh).
    pub fn add(&self, record: &TokenRecord) {
        if let (Some(key), Ok(grant)) = (
            parse_hash(&record.hash),
            Grant::new(
                record.name.clone(),
                record.role,
                record.hosts.clone(),
                record.expires_at,
            ),
        ) {
            let mut stored = self.stored.write();
            stored.0.insert(key, Arc::new(grant));
            stored.1 += 1;
        }
    }

    /// Forgets one token at once (this server revoked it).
    pub fn remove(&self, name: &str) {
        let mut stored = self.stored.write();
        stored.0.retain(|_, grant| grant.name != name);
        stored.1 += 1;
    }

    /// The grant of a bearer secret; `Ok(None)` when there is none. A secret nobody holds, or
    /// an expired one, is refused rather than taken as no token: a client that sends a token
    /// means to use it.
    pub fn identify(
        &self,
        secret: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<Arc<Grant>>, Denied> {
        let Some(secret) = secret.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let key = digest(secret);
        // The fixed tokens are compared in constant time; the stored ones are found by the
        // digest of the secret, which tells an attacker timing nothing about any secret.
        let mut found = None;
        for (hash, grant) in &self.fixed {
            if bool::from(hash.ct_eq(&key)) {
                found = Some(grant.clone());
            }
        }
        let found = found.or_else(|| self.stored.read().0.get(&key).cloned());
        match found {
            None => Err(Denied::BadToken(
                "the token is not valid: unknown, revoked, or mistyped".into(),
            )),
            Some(grant) if grant.expires_at.is_some_and(|at| at <= now) => {
                Err(Denied::BadToken(format!(
                    "the token {:?} expired at {}",
                    grant.name,
                    grant.expires_at.map(|a| a.to_rfc3339()).unwrap_or_default()
                )))
            }
            Some(grant) => Ok(Some(grant)),
        }
    }

    /// Whether `caller` may do what it asks.
    pub fn authorize(&self, caller: &Caller, need: Need<'_>) -> Result<(), Denied> {
        let policy = self.policy;
        match (need, &caller.grant) {
            (Need::Read, _) if policy.anonymous_read => Ok(()),
            (Need::Write { .. }, _) if policy.open_registration => Ok(()),
            (Need::TokenRead, None) => Err(Denied::NoToken(
                "this read needs a reader or admin token: Authorization: Bearer <token>".into(),
            )),
            (Need::Read, None) => Err(Denied::NoToken(
                "reads need a reader or admin token (auth.anonymous_read is false): \
                 Authorization: Bearer <token>"
                    .into(),
            )),
            (Need::Admin, None) => Err(Denied::NoToken(
                "this call needs the admin token: Authorization: Bearer <token>".into(),
            )),
            (Need::Write { .. }, None) => Err(Denied::NoToken(
                "registration and heartbeats need an agent token (the server wrote one to \
                 <data_dir>/agent.token): Authorization: Bearer <token>"
                    .into(),
            )),
            (Need::Read | Need::TokenRead, Some(grant)) => match grant.role {
                Role::Admin | Role::Reader => Ok(()),
                Role::Agent => Err(Denied::Forbidden(format!(
                    "the token {:?} has the role agent, which may only register and \
                     heartbeat; reads need a reader or admin token",
                    grant.name
                ))),
            },
            (Need::Admin, Some(grant)) => match grant.role {
                Role::Admin => Ok(()),
                role => Err(Denied::Forbidden(format!(
                    "this call needs the admin role; the token {:?} has the role {}",
                    grant.name,
                    role.as_str()
                ))),
            },
            (Need::Write { host }, Some(grant)) => match grant.role {
                Role::Admin => Ok(()),
                Role::Reader => Err(Denied::Forbidden(format!(
                    "registration and heartbeats need an agent or admin token; the token {:?} \
                     has the role reader",
                    grant.name
                ))),
                Role::Agent if grant.covers(host) => Ok(()),
                Role::Agent => Err(Denied::HostNotAllowed(format!(
                    "the agent token {:?} may write services on hosts matching {}, not {host:?}",
                    grant.name,
                    grant.hosts_text()
                ))),
            },
        }
    }

    /// Whether `caller` may write services at all (of some host): checked before a service
    /// is looked up, so that a caller without a token learns that, not whether a service
    /// exists.
    pub fn may_write(&self, caller: &Caller) -> Result<(), Denied> {
        match &caller.grant {
            _ if self.policy.open_registration => Ok(()),
            Some(grant) if grant.role != Role::Reader => Ok(()),
            _ => self.authorize(caller, Need::Write { host: "" }),
        }
    }

    /// Whether `caller` may write services of every host without looking at each: the fast
    /// path of heartbeats.
    pub fn may_write_any_host(&self, caller: &Caller) -> bool {
        self.policy.open_registration
            || caller.grant.as_ref().is_some_and(|g| g.covers_every_host())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, role: Role, hosts: &[&str], secret: &str) -> TokenRecord {
        TokenRecord {
            name: name.into(),
            role,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            hash: hash(secret),
            created_at: Utc::now(),
            created_by: None,
            expires_at: None,
        }
    }

    fn tokens(policy: Policy) -> Tokens {
        let tokens = Tokens::new("admin-secret", Some("agent-secret"), policy);
        tokens.replace(
            &[
                record("stor", Role::Agent, &["stor-*"], "stor-secret"),
                record("one", Role::Agent, &["node-1"], "one-secret"),
                record("look", Role::Reader, &[], "look-secret"),
            ],
            0,
        );
        tokens
    }

    fn caller(tokens: &Tokens, secret: Option<&str>) -> Caller {
        Caller {
            grant: tokens.identify(secret, Utc::now()).unwrap(),
            address: None,
        }
    }

    const CLOSED: Policy = Policy {
        anonymous_read: false,
        open_registration: false,
    };

    #[test]
    fn roles_decide_what_a_token_may_do() {
        let tokens = tokens(CLOSED);
        let admin = caller(&tokens, Some("admin-secret"));
        let agent = caller(&tokens, Some("agent-secret"));
        let stor = caller(&tokens, Some("stor-secret"));
        let one = caller(&tokens, Some("one-secret"));
        let reader = caller(&tokens, Some("look-secret"));
        let nobody = caller(&tokens, None);
        let write = |host| Need::Write { host };
        assert!(tokens.authorize(&admin, Need::Admin).is_ok());
        assert!(tokens.authorize(&admin, write("x")).is_ok());
        assert!(tokens.authorize(&agent, write("anything")).is_ok());
        assert!(tokens.authorize(&stor, write("stor-7")).is_ok());
        assert!(matches!(
            tokens.authorize(&stor, write("comp-1")),
            Err(Denied::HostNotAllowed(m)) if m.contains("stor-*") && m.contains("comp-1")
        ));
        assert!(tokens.authorize(&one, write("node-1")).is_ok());
        assert!(tokens.authorize(&one, write("node-10")).is_err());
        assert!(matches!(
            tokens.authorize(&reader, write("x")),
            Err(Denied::Forbidden(_))
        ));
        assert!(tokens.authorize(&reader, Need::Read).is_ok());
        assert!(matches!(
            tokens.authorize(&agent, Need::Read),
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(
            tokens.authorize(&stor, Need::Admin),
            Err(Denied::Forbidden(m)) if m.contains("admin role")
        ));
        assert!(matches!(
            tokens.authorize(&nobody, Need::Read),
            Err(Denied::NoToken(_))
        ));
        assert!(matches!(
            tokens.authorize(&nobody, write("x")),
            Err(Denied::NoToken(_))
        ));
        assert!(tokens.may_write_any_host(&agent));
        assert!(!tokens.may_write_any_host(&stor));
    }

    #[test]
    fn the_policy_opens_reads_and_registration() {
        let tokens = tokens(Policy {
            anonymous_read: true,
            open_registration: true,
        });
        let nobody = caller(&tokens, None);
        assert!(tokens.authorize(&nobody, Need::Read).is_ok());
        assert!(tokens.authorize(&nobody, Need::Write { host: "x" }).is_ok());
        assert!(tokens.authorize(&nobody, Need::Admin).is_err());
    }

    #[test]
    fn unknown_revoked_and_expired_tokens_are_refused() {
        let tokens = tokens(CLOSED);
        assert!(matches!(
            tokens.identify(Some("guess"), Utc::now()),
            Err(Denied::BadToken(_))
        ));
        tokens.remove("stor");
        assert!(tokens.identify(Some("stor-secret"), Utc::now()).is_err());
        let mut old = record("old", Role::Reader, &[], "old-secret");
        old.expires_at = Some(Utc::now() - chrono::TimeDelta::seconds(1));
        tokens.add(&old);
        assert!(matches!(
            tokens.identify(Some("old-secret"), Utc::now()),
            Err(Denied::BadToken(m)) if m.contains("expired")
        ));
        assert!(tokens.identify(Some("  "), Utc::now()).unwrap().is_none());
    }

    #[test]
    fn names_and_patterns_are_checked() {
        assert!(check_token("stor-fleet", Role::Agent, &["stor-*".into()]).is_ok());
        assert!(check_token("", Role::Agent, &["*".into()]).is_err());
        assert!(check_token("fleet", Role::Agent, &[]).is_err());
        assert!(check_token("fleet", Role::Agent, &["*".into()]).is_ok());
        assert!(check_token("..", Role::Reader, &[]).is_err());
        assert!(check_token("a b", Role::Agent, &[]).is_err());
        assert!(check_token("admin", Role::Reader, &[]).is_err());
        assert!(check_token("r", Role::Reader, &["x".into()]).is_err());
        assert!(check_token("bad", Role::Agent, &["[".into()]).is_err());
        let secret = new_secret();
        assert!(secret.starts_with("vigil_") && secret.len() == 70);
        assert_eq!(parse_hash(&hash(&secret)), Some(digest(&secret)));
    }
}
