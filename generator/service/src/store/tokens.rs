//! API tokens: stored as their hash only.

use super::{Store, now};
use crate::db::DbError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: String,
}

impl Store {
    pub async fn add_token(&self, id: &str, name: &str, role: &str, hash: &str) -> Result<(), DbError> {
        self.db
            .execute(
                "INSERT INTO tokens (id, name, role, hash, created_at) VALUES ($1, $2, $3, $4, $5)",
                vec![id.into(), name.into(), role.into(), hash.into(), now().into()],
            )
            .await
            .map(drop)
    }

    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, DbError> {
        let rows = self
            .db
            .query("SELECT id, name, role FROM tokens WHERE hash = $1", vec![hash.into()])
            .await?;
        Ok(rows.first().map(|r| TokenRecord {
            id: r.text(0),
            name: r.text(1),
            role: r.text(2),
        }))
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, DbError> {
        let rows = self
            .db
            .query("SELECT id, name, role FROM tokens ORDER BY id", vec![])
            .await?;
        Ok(rows
            .iter()
            .map(|r| TokenRecord {
                id: r.text(0),
                name: r.text(1),
                role: r.text(2),
            })
            .collect())
    }

    pub async fn delete_token(&self, id: &str) -> Result<bool, DbError> {
        Ok(self
            .db
            .execute("DELETE FROM tokens WHERE id = $1", vec![id.into()])
            .await?
            > 0)
    }

    pub async fn count_tokens(&self, role: &str) -> Result<i64, DbError> {
        let rows = self
            .db
            .query("SELECT COUNT(*) FROM tokens WHERE role = $1", vec![role.into()])
            .await?;
        Ok(rows.first().map_or(0, |r| r.int(0)))
    }
}
