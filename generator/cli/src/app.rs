//! `bundlegen app`: app versions registered with a service (what boxes
//! install "from the service"), and looking up their bundles.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::Failure;
use crate::args::runtime;
use crate::remote::{ServerArgs, table, text};

#[derive(Args)]
pub struct AppArgs {
    #[command(subcommand)]
    command: AppCommand,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Subcommand)]
enum AppCommand {
    /// Registers (or changes) an app version: the image boxes get a bundle
    /// of when they install it from the service.
    Register {
        app: String,
        version: String,
        /// The image (`docker://HOST/REPO:TAG`).
        #[arg(long)]
        image: String,
        /// App metadata (appmetadata.json).
        #[arg(short = 'a', long = "appmetadata", value_name = "FILE")]
        metadata: Option<PathBuf>,
        /// Bundle options as JSON (`{"format": "tar.zst"}`).
        #[arg(long, value_name = "JSON")]
        options: Option<String>,
    },
    /// An app version's definition.
    Show { app: String, version: String },
    /// Every registered app version.
    List,
    /// The bundle of an app version for a platform, as a box looks it up
    /// (the first lookup starts its generation).
    Lookup {
        app: String,
        version: String,
        #[arg(long)]
        platform: String,
        /// Wait up to this many seconds while it is generated.
        #[arg(long, default_value_t = 300)]
        wait: u64,
    },
}

fn definition(answer: &Value) -> String {
    format!(
        "{} {}: {}{}",
        text(&answer["appId"]),
        text(&answer["version"]),
        text(&answer["image"]),
        if answer["metadata"].is_object() {
            " (with metadata)"
        } else {
            ""
        }
    )
}

pub fn run(args: &AppArgs) -> Result<(), Failure> {
    let client = args.server.client()?;
    runtime()?.block_on(async {
        match &args.command {
            AppCommand::Register {
                app,
                version,
                image,
                metadata,
                options,
            } => {
                let mut body = json!({"image": image});
                if let Some(metadata) = metadata {
                    let text = crate::remote::read_document(metadata)?;
                    body["metadata"] = serde_json::from_str(&text).map_err(anyhow::Error::from)?;
                }
                if let Some(options) = options {
                    body["options"] =
                        serde_json::from_str(options).map_err(|e| anyhow::anyhow!("--options: not JSON: {e}"))?;
                }
                args.server
                    .show(&client.put_app(app, version, &body).await?, definition);
            }
            AppCommand::Show { app, version } => args.server.show(&client.app(app, version).await?, definition),
            AppCommand::List => args.server.show(&client.apps().await?, |answer| {
                let rows = answer["apps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| vec![text(&a["appId"]), text(&a["version"]), text(&a["image"])])
                    .collect();
                table(&["APP", "VERSION", "IMAGE"], rows)
            }),
            AppCommand::Lookup {
                app,
                version,
                platform,
                wait,
            } => args
                .server
                .show(&client.lookup(app, version, platform, *wait).await?, |answer| {
                    let bundle = &answer["bundle"];
                    match bundle["downloadUrl"].as_str() {
                        Some(url) => format!(
                            "bundle {}: {url} ({} bytes, sha256 {})",
                            text(&bundle["id"]),
                            text(&bundle["size"]),
                            text(&bundle["sha256"])
                        ),
                        None => format!(
                            "still being generated (job {}, {}): look it up again",
                            text(&answer["job"]["id"]),
                            text(&answer["job"]["state"])
                        ),
                    }
                }),
        }
        Ok(())
    })
}
