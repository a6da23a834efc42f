//! App versions boxes look up bundles of.

use serde::{Deserialize, Serialize};

use super::{Store, now};
use crate::db::DbError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppRecord {
    pub app_id: String,
    pub version: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub options: serde_json::Value,
}

impl Store {
    pub async fn put_app(&self, app: &AppRecord) -> Result<(), DbError> {
        let metadata = app.metadata.as_ref().map(|m| m.to_string());
        self.db
            .execute(
                "INSERT INTO apps (app_id, version, image, metadata, options, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (app_id, version) DO UPDATE \
                 SET image = $3, metadata = $4, options = $5",
                vec![
                    app.app_id.as_str().into(),
                    app.version.as_str().into(),
                    app.image.as_str().into(),
                    metadata.into(),
                    app.options.to_string().into(),
                    now().into(),
                ],
            )
            .await
            .map(drop)
    }

    pub async fn app(&self, app_id: &str, version: &str) -> Result<Option<AppRecord>, DbError> {
        let rows = self
            .db
            .query(
                "SELECT app_id, version, image, metadata, options FROM apps WHERE app_id = $1 AND version = $2",
                vec![app_id.into(), version.into()],
            )
            .await?;
        Ok(rows.first().map(|r| AppRecord {
            app_id: r.text(0),
            version: r.text(1),
            image: r.text(2),
            metadata: r.opt_text(3).and_then(|m| serde_json::from_str(&m).ok()),
            options: serde_json::from_str(&r.text(4)).unwrap_or_default(),
        }))
    }

    pub async fn apps(&self) -> Result<Vec<AppRecord>, DbError> {
        let rows = self
            .db
            .query(
                "SELECT app_id, version, image, metadata, options FROM apps ORDER BY app_id, version",
                vec![],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AppRecord {
                app_id: r.text(0),
                version: r.text(1),
                image: r.text(2),
                metadata: r.opt_text(3).and_then(|m| serde_json::from_str(&m).ok()),
                options: serde_json::from_str(&r.text(4)).unwrap_or_default(),
            })
            .collect())
    }
}
