//! API tokens: stored as their hash only; revoked, never deleted, so a
//! revoked token cannot come back.

use super::{Store, now};
use crate::db::{DbError, Row};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    /// The platform a device token belongs to.
    pub platform: Option<String>,
    /// The device a device token names.
    pub device: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A token to record.
pub struct NewToken<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub role: &'a str,
    pub hash: &'a str,
    pub platform: Option<&'a str>,
    pub device: Option<&'a str>,
    pub expires_at: Option<i64>,
}

const TOKEN_COLUMNS: &str = "id, name, role, platform, device, created_at, last_used_at, expires_at, revoked_at";

fn token(row: &Row) -> TokenRecord {
    TokenRecord {
        id: row.text(0),
        name: row.text(1),
        role: row.text(2),
        platform: row.opt_text(3),
        device: row.opt_text(4),
        created_at: row.int(5),
        last_used_at: row.opt_int(6),
        expires_at: row.opt_int(7),
        revoked_at: row.opt_int(8),
    }
}

/// Last-use times are written at most this often per token (seconds).
pub const LAST_USE_GRANULARITY: i64 = 60;

impl Store {
    pub async fn add_token(&self, new: &NewToken<'_>) -> Result<(), DbError> {
        self.db
            .execute(
                "INSERT INTO tokens (id, name, role, hash, platform, device, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                vec![
                    new.id.into(),
                    new.name.into(),
                    new.role.into(),
                    new.hash.into(),
                    new.platform.into(),
                    new.device.into(),
                    new.expires_at.into(),
                    now().into(),
                ],
            )
            .await
            .map(drop)
    }

    /// The token with this hash, revoked or not.
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, DbError> {
        let rows = self
            .db
            .query(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"),
                vec![hash.into()],
            )
            .await?;
        Ok(rows.first().map(token))
    }

    /// The tokens not revoked.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, DbError> {
        let rows = self
            .db
            .query(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE revoked_at IS NULL ORDER BY id"),
                vec![],
            )
            .await?;
        Ok(rows.iter().map(token).collect())
    }

    /// Revokes a token; false if there is no such token (or it is revoked).
    pub async fn revoke_token(&self, id: &str) -> Result<bool, DbError> {
        Ok(self
            .db
            .execute(
                "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                vec![now().into(), id.into()],
            )
            .await?
            > 0)
    }

    /// Records that a token was used (at most once a minute).
    pub async fn token_used(&self, id: &str) -> Result<(), DbError> {
        let now = now();
        self.db
            .execute(
                "UPDATE tokens SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
                vec![now.into(), id.into(), (now - LAST_USE_GRANULARITY).into()],
            )
            .await
            .map(drop)
    }

    /// Tokens of `role` that are not revoked.
    pub async fn count_tokens(&self, role: &str) -> Result<i64, DbError> {
        let rows = self
            .db
            .query(
                "SELECT COUNT(*) FROM tokens WHERE role = $1 AND revoked_at IS NULL",
                vec![role.into()],
            )
            .await?;
        Ok(rows.first().map_or(0, |r| r.int(0)))
    }
}
