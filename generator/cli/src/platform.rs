//! `bundlegen platform`: a service's platforms: list, show, upload a
//! template (and its probe report or library list), versions, diff, review
//! and policy.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::Failure;
use crate::args::runtime;
use crate::remote::{ServerArgs, read_document, table, text, utc};

#[derive(Args)]
pub struct PlatformArgs {
    #[command(subcommand)]
    command: PlatformCommand,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Subcommand)]
enum PlatformCommand {
    /// Every platform and its current version.
    List,
    /// A platform's current (or given) version: template, library count, source.
    Show {
        name: String,
        #[arg(long)]
        version: Option<i64>,
    },
    /// Creates or updates a platform: its template, and optionally the box's
    /// probe report (platform-probe) or BundleGen library list.
    Upload {
        name: String,
        /// The platform template (NAME.json).
        template: Option<PathBuf>,
        /// A probe report (NAME_probe.json).
        #[arg(long, value_name = "FILE")]
        probe: Option<PathBuf>,
        /// A BundleGen library list (NAME_libs.json).
        #[arg(long, value_name = "FILE", conflicts_with = "probe")]
        libs: Option<PathBuf>,
    },
    /// Every version: what changed, who made it, held or accepted.
    Versions { name: String },
    /// What changed between two versions (default: the last change).
    Diff {
        name: String,
        #[arg(long)]
        from: Option<i64>,
        #[arg(long)]
        to: Option<i64>,
    },
    /// Accepts a probe report held for review.
    Accept { name: String, version: i64 },
    /// Shows, or with options sets, whether box reports that change libc,
    /// the loader or graphics libraries are used without review, and how
    /// many versions are kept.
    Policy {
        name: String,
        #[arg(long, value_name = "BOOL")]
        auto_accept: Option<bool>,
        #[arg(long, value_name = "N")]
        keep_versions: Option<i64>,
    },
}

/// "version N" plus the service's warnings and, for a held report, why.
fn stored(answer: &Value) -> String {
    let mut lines = vec![match answer["held"].as_bool() {
        Some(true) => format!(
            "{} version {} is held for review: {}",
            text(&answer["name"]),
            text(&answer["version"]),
            answer["reasons"]
                .as_array()
                .map(|r| r.iter().map(text).collect::<Vec<_>>().join("; "))
                .unwrap_or_default()
        ),
        _ => format!("{} is now version {}", text(&answer["name"]), text(&answer["version"])),
    }];
    for warning in answer["warnings"].as_array().into_iter().flatten() {
        lines.push(format!("warning: {}", text(warning)));
    }
    lines.join("\n")
}

fn diff_summary(diff: &Value) -> String {
    let mut lines = vec![format!(
        "{}: version {} to {}",
        text(&diff["platform"]),
        text(&diff["from"]),
        text(&diff["to"])
    )];
    for change in diff["template"].as_array().into_iter().flatten() {
        lines.push(format!(
            "  template {}: {} -> {}",
            text(&change["path"]),
            text(&change["from"]),
            text(&change["to"])
        ));
    }
    let names = |v: &Value| {
        v.as_array()
            .map(|a| a.iter().map(text).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    for (what, key) in [("library added", "added"), ("library removed", "removed")] {
        for name in names(&diff["libraries"][key]) {
            lines.push(format!("  {what}: {name}"));
        }
    }
    for change in diff["libraries"]["changed"].as_array().into_iter().flatten() {
        let mut how = Vec::new();
        for (label, key) in [
            ("lost", "versionsLost"),
            ("gained", "versionsGained"),
            ("needs now", "dependenciesAdded"),
            ("no longer needs", "dependenciesRemoved"),
        ] {
            let items = names(&change[key]);
            if !items.is_empty() {
                how.push(format!("{label} {}", items.join(", ")));
            }
        }
        if let Some([from, to]) = change["soname"].as_array().map(Vec::as_slice) {
            how.push(format!("SONAME {} -> {}", text(from), text(to)));
        }
        if change["sha256"].is_array() {
            how.push("other content".into());
        }
        lines.push(format!(
            "  library changed: {}: {}",
            text(&change["name"]),
            how.join("; ")
        ));
    }
    for (what, key) in [("added", "added"), ("removed", "removed"), ("changed", "changed")] {
        for path in names(&diff["devices"][key]) {
            lines.push(format!("  device {what}: {path}"));
        }
    }
    if lines.len() == 1 {
        lines.push("  nothing changed".into());
    }
    lines.join("\n")
}

pub fn run(args: &PlatformArgs) -> Result<(), Failure> {
    let client = args.server.client()?;
    let show = |answer: Value, summary: &dyn Fn(&Value) -> String| args.server.show(&answer, summary);
    runtime()?.block_on(async {
        match &args.command {
            PlatformCommand::List => show(client.platforms().await?, &|answer| {
                let rows = answer["platforms"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| vec![text(&p["name"]), text(&p["currentVersion"]), utc(&p["updatedAt"])])
                    .collect();
                table(&["PLATFORM", "VERSION", "UPDATED"], rows)
            }),
            PlatformCommand::Show { name, version } => show(client.platform(name, *version).await?, &|p| {
                format!(
                    "{} version {} ({} by {}, {})\nlibraries: {} from {}; devices: {}",
                    text(&p["name"]),
                    text(&p["version"]),
                    text(&p["change"]),
                    text(&p["createdBy"]),
                    utc(&p["createdAt"]),
                    text(&p["generated"]["libraries"]),
                    text(&p["generated"]["source"]),
                    text(&p["generated"]["devices"])
                )
            }),
            PlatformCommand::Upload {
                name,
                template,
                probe,
                libs,
            } => {
                if template.is_none() && probe.is_none() && libs.is_none() {
                    return Err(
                        anyhow::anyhow!("nothing to upload: give TEMPLATE, --probe FILE or --libs FILE").into(),
                    );
                }
                if let Some(template) = template {
                    show(client.put_template(name, read_document(template)?).await?, &stored);
                }
                if let Some(probe) = probe {
                    show(client.post_probe(name, read_document(probe)?).await?, &stored);
                }
                if let Some(libs) = libs {
                    show(client.put_libs(name, read_document(libs)?).await?, &stored);
                }
            }
            PlatformCommand::Versions { name } => show(client.versions(name).await?, &|answer| {
                let rows = answer["versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| {
                        vec![
                            text(&v["version"]),
                            text(&v["change"]),
                            text(&v["state"]),
                            text(&v["createdBy"]),
                            utc(&v["createdAt"]),
                        ]
                    })
                    .collect();
                table(&["VERSION", "CHANGE", "STATE", "BY", "AT"], rows)
            }),
            PlatformCommand::Diff { name, from, to } => show(client.diff(name, *from, *to).await?, &diff_summary),
            PlatformCommand::Accept { name, version } => show(client.accept(name, *version).await?, &|_| {
                format!("{name} version {version} accepted")
            }),
            PlatformCommand::Policy {
                name,
                auto_accept,
                keep_versions,
            } => {
                let answer = if auto_accept.is_none() && keep_versions.is_none() {
                    client.policy(name).await?
                } else {
                    let mut policy = client.policy(name).await?;
                    if let Some(auto_accept) = auto_accept {
                        policy["autoAccept"] = json!(auto_accept);
                    }
                    if let Some(keep) = keep_versions {
                        policy["keepVersions"] = json!(keep);
                    }
                    client.set_policy(name, &policy).await?
                };
                show(answer, &|p| {
                    format!(
                        "{name}: autoAccept {}, keepVersions {}",
                        text(&p["autoAccept"]),
                        text(&p["keepVersions"])
                    )
                })
            }
        }
        Ok(())
    })
}
