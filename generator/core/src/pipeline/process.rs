//! `process`: DobbyInit in front of the app, environment, rlimits.

use std::path::Path;

use bundlegen_protocol::runtime::{Mount, Rlimit};

use super::{Inputs, StageError};
use crate::bundle::Bundle;
use crate::rootfs::Rootfs;

/// The app's program as a container path (`args[0]`, looked up in `PATH`
/// when it is not absolute), before DobbyInit is put in front of it.
pub fn entrypoint(bundle: &mut Bundle<dyn Rootfs>) -> Option<String> {
    let program = bundle.config.process.as_ref()?.args.first()?.clone();
    if program.starts_with('/') {
        return Some(program);
    }
    let path = bundle
        .env_value("PATH")
        .unwrap_or("/usr/local/bin:/usr/bin:/bin")
        .to_string();
    path.split(':')
        .map(|dir| format!("{dir}/{program}"))
        .find(|candidate| bundle.rootfs.resolve_follow(Path::new(candidate)).is_ok())
}

/// Appends `NAME=value`; an entry with the same name is replaced when `replace`.
fn set_env(env: &mut Vec<String>, entry: &str, replace: bool) {
    let name = entry.split('=').next().unwrap_or(entry);
    let prefix = format!("{name}=");
    match env.iter().position(|e| e.starts_with(&prefix)) {
        Some(index) if replace => env[index] = entry.to_string(),
        _ => env.push(entry.to_string()),
    }
}

pub fn apply(
    bundle: &mut Bundle<dyn Rootfs>,
    inputs: &Inputs<'_>,
    warnings: &mut Vec<String>,
) -> Result<(), StageError> {
    let dobby_init = inputs.platform.dobby().dobby_init().to_string();
    let process = bundle.config.process.get_or_insert_with(Default::default);
    if process.args.is_empty() {
        return Err(StageError::Failed {
            stage: "process",
            message: "the image has neither Entrypoint nor Cmd: there is nothing to run".into(),
        });
    }
    if inputs.options.crun {
        // crun run is used without a terminal; Dobby sets its own.
        process.terminal = false;
    } else {
        // BundleGen shlex-splits arguments with spaces; an image's Entrypoint
        // and Cmd are already lists, so they are kept as they are.
        if process.args.iter().any(|a| a.contains(' ')) {
            warnings.push("arguments containing spaces are kept whole (BundleGen split them)".into());
        }
        process.args.insert(0, dobby_init.clone());
    }
    // Platform variables are appended as BundleGen does; the operator's
    // replace any of the same name.
    for entry in &inputs.platform.envvar {
        set_env(&mut process.env, entry, false);
    }
    for entry in &inputs.operator.envvar {
        set_env(&mut process.env, entry, true);
    }
    process
        .rlimits
        .extend(inputs.platform.resource_limits.iter().map(|l| Rlimit {
            kind: l.kind.clone(),
            hard: l.hard,
            soft: l.soft,
        }));
    if !inputs.options.crun {
        bundle.add_mount(Mount::new(
            &dobby_init,
            "bind",
            &dobby_init,
            &["rbind", "nosuid", "nodev", "ro"],
        ));
        if inputs.options.create_mount_points {
            bundle
                .create_mount_point(&dobby_init, false)
                .map_err(StageError::rootfs("mount points"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::set_env;

    #[test]
    fn environment_entries_append_or_replace() {
        let mut env = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        set_env(&mut env, "A=2", false);
        set_env(&mut env, "B=1", true);
        set_env(&mut env, "PATH=/usr/bin", true);
        assert_eq!(env, ["PATH=/usr/bin", "A=1", "A=2", "B=1"]);
    }
}
