//! `bundlegen token`: a service's tokens (admin only): create one for a
//! person, a CI job or a fleet of boxes, list them, revoke one.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::Failure;
use crate::args::runtime;
use crate::remote::{ServerArgs, table, text, utc};

#[derive(Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Creates a token; it is shown once (or written to --out, mode 0600).
    Create {
        /// Who or what holds it (unique).
        name: String,
        /// admin, platform-team or device.
        #[arg(long)]
        role: String,
        /// The platform a device token belongs to (required for devices).
        #[arg(long)]
        platform: Option<String>,
        /// The device a device token names (default: its name).
        #[arg(long)]
        device: Option<String>,
        /// Days until it stops working.
        #[arg(long, value_name = "DAYS")]
        expires_in_days: Option<u32>,
        /// Write the token to this file (0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Every token in use (never the secrets): role, platform, last use, expiry.
    List,
    /// Revokes a token by id: it stops working at once, for good.
    Revoke { id: String },
}

pub fn run(args: &TokenArgs) -> Result<(), Failure> {
    let client = args.server.client()?;
    runtime()?.block_on(async {
        match &args.command {
            TokenCommand::Create {
                name,
                role,
                platform,
                device,
                expires_in_days,
                out,
            } => {
                let mut request = json!({"name": name, "role": role});
                for (key, value) in [("platform", platform), ("device", device)] {
                    if let Some(value) = value {
                        request[key] = json!(value);
                    }
                }
                if let Some(days) = expires_in_days {
                    request["expiresInDays"] = json!(days);
                }
                let created = client.create_token(&request).await?;
                let secret = text(&created["token"]);
                match out {
                    Some(path) => {
                        bundlegen_protocol::fsutil::write_file_atomic(path, format!("{secret}\n").as_bytes(), 0o600)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                        args.server.show(&created, |c| {
                            format!(
                                "token {} ({}) written to {}",
                                text(&c["id"]),
                                text(&c["name"]),
                                path.display()
                            )
                        });
                    }
                    None => args.server.show(&created, |_| secret.clone()),
                }
            }
            TokenCommand::List => args.server.show(&client.tokens().await?, |answer| {
                let rows = answer["tokens"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        vec![
                            text(&t["id"]),
                            text(&t["name"]),
                            text(&t["role"]),
                            text(&t["platform"]),
                            utc(&t["lastUsedAt"]),
                            utc(&t["expiresAt"]),
                        ]
                    })
                    .collect();
                table(&["ID", "NAME", "ROLE", "PLATFORM", "LAST USED", "EXPIRES"], rows)
            }),
            TokenCommand::Revoke { id } => {
                client.revoke_token(id).await?;
                args.server.show(&json!({"revoked": id}), |_| format!("{id} revoked"));
            }
        }
        Ok(())
    })
}
