//! What the commands that talk to a running service share: where it is,
//! the token, and how answers are shown (`--json` for the raw answer).

use std::path::PathBuf;

use bundlegen_service::client::ServiceClient;
use clap::Args;
use serde_json::Value;

use crate::Failure;

#[derive(Args, Clone)]
pub struct ServerArgs {
    /// The service's base URL.
    #[arg(long, value_name = "URL", env = "BUNDLEGEN_SERVER", global = true)]
    pub server: Option<String>,
    /// File with your token (`bundlegen token create` makes one).
    #[arg(long, value_name = "FILE", env = "BUNDLEGEN_TOKEN_FILE", global = true)]
    pub token: Option<PathBuf>,
    /// Trust this CA (PEM) for the service's certificate.
    #[arg(long, value_name = "FILE", env = "BUNDLEGEN_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Print the service's answer as JSON instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ServerArgs {
    pub fn client(&self) -> Result<ServiceClient, Failure> {
        let server = self
            .server
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("no service: pass --server URL (or set BUNDLEGEN_SERVER)"))?;
        let token_file = self
            .token
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("no token: pass --token FILE (or set BUNDLEGEN_TOKEN_FILE)"))?;
        let token = bundlegen_protocol::http::read_token(token_file)?;
        Ok(ServiceClient::new(server, token, self.ca.as_deref())?)
    }

    /// Prints `answer` as JSON with `--json`, else as `summary` makes it.
    pub fn show(&self, answer: &Value, summary: impl FnOnce(&Value) -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(answer).unwrap_or_default());
        } else {
            let text = summary(answer);
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
        }
    }
}

/// Reads a document to send, naming the file when it cannot.
pub fn read_document(path: &std::path::Path) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", path.display()))?;
    Ok(text)
}

/// A field as text: strings bare, nothing as "-", anything else as JSON.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Unix seconds as `2026-11-25 19:30 UTC` ("-" for none).
pub fn utc(value: &Value) -> String {
    let Some(seconds) = value.as_i64() else {
        return "-".into();
    };
    bundlegen_protocol::civil::format_utc(seconds)
}

/// Rows as aligned columns under `header`.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn times_and_tables_read_well() {
        assert_eq!(utc(&json!(0)), "1970-01-01 00:00 UTC");
        assert_eq!(utc(&json!(1_764_099_000)), "2025-11-25 19:30 UTC");
        assert_eq!(utc(&json!(951_782_400)), "2000-02-29 00:00 UTC");
        assert_eq!(utc(&Value::Null), "-");
        assert_eq!(
            table(&["A", "LONGER"], vec![vec!["xyz".into(), "1".into()]]),
            "A    LONGER\nxyz  1"
        );
    }
}
