//! Tokens: made, listed and revoked by an admin; every change written to the database before
//! it is acknowledged, and logged as an audit line (`vigil::audit`) with who asked and from
//! where.

use chrono::{DateTime, TimeDelta, Utc};

use super::{App, AppError};
use crate::auth::{self, Caller};
use crate::model::{Role, TokenRecord};
use crate::store::StoreResult;

/// Longest lifetime a token may be given: ten years.
const MAX_LIFETIME_S: f64 = 10.0 * 365.0 * 86_400.0;

/// A token to make, as asked.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
    pub hosts: Vec<String>,
    pub expires_in_s: Option<f64>,
}

impl App {
    /// Makes a token; returns it and its secret, which is not kept.
    pub async fn create_token(
        &self,
        new: NewToken,
        caller: &Caller,
    ) -> Result<(TokenRecord, String), AppError> {
        auth::check_token(&new.name, new.role, &new.hosts).map_err(|message| {
            AppError::Invalid {
                code: "invalid_token".into(),
                message,
            }
        })?;
        self.limit_writes(caller)?;
        let now = self.clock.now();
        let expires_at = match new.expires_in_s {
            None => None,
            Some(s) if s.is_finite() && s > 0.0 && s <= MAX_LIFETIME_S => {
                Some(now + TimeDelta::milliseconds((s * 1000.0) as i64))
            }
            Some(_) => {
                return Err(AppError::Invalid {
                    code: "invalid_expires_in".into(),
                    message: "expires_in_s is a number of seconds above 0 and at most ten years"
                        .into(),
                })
            }
        };
        let secret = auth::new_secret();
        let record = TokenRecord {
            name: new.name,
            role: new.role,
            hosts: new.hosts,
            hash: auth::hash(&secret),
            created_at: now,
            created_by: caller.actor().name,
            expires_at,
        };
        let created = self.store.create_token(&record).await;
        self.database.record(&created);
        if !created? {
            return Err(AppError::TokenExists(record.name));
        }
        self.tokens.add(&record);
        audit(caller, "created a token", &record.name, Some(&record));
        Ok((record, secret))
    }

    /// Every token, without secrets.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, AppError> {
        let listed = self.store.list_tokens().await;
        self.database.record(&listed);
        Ok(listed?)
    }

    /// Revokes a token: refused here at once, by the other replicas within `flush_interval`.
    pub async fn revoke_token(&self, name: &str, caller: &Caller) -> Result<(), AppError> {
        self.limit_writes(caller)?;
        let revoked = self.store.revoke_token(name).await;
        self.database.record(&revoked);
        if !revoked? {
            return Err(AppError::TokenNotFound(name.to_string()));
        }
        self.tokens.remove(name);
        audit(caller, "revoked a token", name, None);
        Ok(())
    }

    /// Takes the database's tokens as they are now: those other replicas made or revoked.
    pub async fn refresh_tokens(&self) -> StoreResult<()> {
        let generation = self.tokens.generation();
        let tokens = self.store.list_tokens().await?;
        self.tokens.replace(&tokens, generation);
        Ok(())
    }
}

/// Whether a token's time has passed.
pub fn expired(record: &TokenRecord, now: DateTime<Utc>) -> bool {
    record.expires_at.is_some_and(|at| at <= now)
}

fn audit(caller: &Caller, what: &str, name: &str, record: Option<&TokenRecord>) {
    let actor = caller.actor();
    tracing::info!(
        target: "vigil::audit",
        actor = actor.name.as_deref().unwrap_or("-"),
        address = actor.address.as_deref().unwrap_or("-"),
        token = name,
        role = record.map(|r| r.role.as_str()),
        hosts = record.map(|r| r.hosts.join(",")),
        "{what}"
    );
}
