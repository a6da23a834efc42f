//! The rules a platform template must meet beyond its types, each problem
//! named by its JSON path.

use super::{Gpu, PlatformTemplate};
use crate::config::{Problem, Validate, check_absolute, check_one_of, field};
use crate::runtime::{Mount, Rlimit};

pub(crate) fn validate_mounts(mounts: &[Mount], path: &str, problems: &mut Vec<Problem>) {
    for (i, mount) in mounts.iter().enumerate() {
        let at = format!("{path}[{i}]");
        check_absolute(&mount.destination, &field(&at, "destination"), problems);
        let bind = mount.kind.as_deref() == Some("bind")
            || mount.options.iter().flatten().any(|o| o == "bind" || o == "rbind");
        let mount_only = mount.options.iter().flatten().any(|o| o == "X-mount.no");
        if bind && !mount_only {
            match &mount.source {
                Some(source) => check_absolute(source, &field(&at, "source"), problems),
                None => problems.push(Problem {
                    path: field(&at, "source"),
                    reason: "a bind mount needs a source".into(),
                }),
            }
        }
    }
}

/// `NAME=value` entries of an `envvar` list.
pub(crate) fn validate_env(vars: &[String], path: &str, problems: &mut Vec<Problem>) {
    for (i, var) in vars.iter().enumerate() {
        if var.split_once('=').is_none_or(|(name, _)| name.is_empty()) {
            problems.push(Problem {
                path: format!("{path}[{i}]"),
                reason: format!("{var:?} is not NAME=value"),
            });
        }
    }
}

/// The limits crun knows (`man 2 setrlimit`); another name fails the container's start.
const RLIMITS: [&str; 16] = [
    "RLIMIT_AS",
    "RLIMIT_CORE",
    "RLIMIT_CPU",
    "RLIMIT_DATA",
    "RLIMIT_FSIZE",
    "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_NOFILE",
    "RLIMIT_NPROC",
    "RLIMIT_RSS",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
    "RLIMIT_SIGPENDING",
    "RLIMIT_STACK",
];

impl Validate for PlatformTemplate {
    fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        let mut problem = |at: &str, reason: String| {
            problems.push(Problem {
                path: field(path, at),
                reason,
            })
        };
        if self.os != "linux" {
            problem("os", format!("{:?} is not supported: bundles run on linux", self.os));
        }
        if self.arch.arch.trim().is_empty() {
            problem("arch.arch", "must not be empty".into());
        }
        if self.network.options.is_empty() {
            problem("network.options", "lists no network type, so no app could run".into());
        }
        if let Some(tarball) = &self.tarball
            && tarball.file_mask.is_some()
            && tarball.mask().is_none_or(|m| m > 0o7777)
        {
            problem(
                "tarball.fileMask",
                format!("{:?} is not an octal mode mask", tarball.file_mask),
            );
        }
        validate_rlimits(&self.resource_limits, &field(path, "resourceLimits"), problems);
        validate_env(&self.envvar, &field(path, "envvar"), problems);
        if let Some(logging) = &self.logging {
            check_one_of(
                &logging.mode,
                &["file", "journald", "devnull"],
                &field(path, "logging.mode"),
                problems,
            );
            if logging.mode == "file" {
                match &logging.log_dir {
                    Some(dir) => check_absolute(dir, &field(path, "logging.logDir"), problems),
                    None => problems.push(Problem {
                        path: field(path, "logging.logDir"),
                        reason: "is required when logging.mode is file".into(),
                    }),
                }
            }
        }
        if let Some(persistent) = self.storage.as_ref().and_then(|s| s.persistent.as_ref()) {
            check_absolute(
                &persistent.storage_dir,
                &field(path, "storage.persistent.storageDir"),
                problems,
            );
        }
        if let Some(gpu) = &self.gpu {
            gpu.validate(&field(path, "gpu"), problems);
        }
        validate_mounts(&self.mounts, &field(path, "mounts"), problems);
        self.validate_host_paths(path, problems);
        for (i, entry) in self.libs.iter().enumerate() {
            entry.validate(&field(path, &format!("libs[{i}]")), problems);
        }
    }
}

impl PlatformTemplate {
    /// Paths on the box that Dobby and its plugins open as given: relative
    /// ones would resolve against the daemon's working directory.
    fn validate_host_paths(&self, path: &str, problems: &mut Vec<Problem>) {
        let dobby = self.dobby();
        check_absolute(dobby.dobby_init(), &field(path, "dobby.dobbyInitPath"), problems);
        for (i, dep) in dobby.plugin_dependencies.iter().enumerate() {
            check_absolute(dep, &field(path, &format!("dobby.pluginDependencies[{i}]")), problems);
        }
        let host_paths = [
            ("dobby.pluginDir", dobby.plugin_dir.as_deref()),
            (
                "dobby.hookLauncherExecutablePath",
                dobby.hook_launcher_executable_path.as_deref(),
            ),
            (
                "dobby.hookLauncherParametersPath",
                dobby.hook_launcher_parameters_path.as_deref(),
            ),
            (
                "minidump.destinationPath",
                self.minidump.as_ref().map(|m| m.destination_path.as_str()),
            ),
            ("oomcrash.path", self.oomcrash.as_ref().map(|o| o.path.as_str())),
            (
                "gpu.westeros.hostSocket",
                self.gpu
                    .as_ref()
                    .and_then(|g| g.westeros.as_ref())
                    .and_then(|w| w.host_socket.as_deref()),
            ),
        ];
        for (at, value) in host_paths {
            if let Some(value) = value {
                check_absolute(value, &field(path, at), problems);
            }
        }
    }
}

impl Validate for Gpu {
    fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        for (i, lib) in self.gfx_libs.iter().enumerate() {
            check_absolute(&lib.src, &field(path, &format!("gfxLibs[{i}].src")), problems);
            check_absolute(&lib.dst, &field(path, &format!("gfxLibs[{i}].dst")), problems);
        }
        for (i, dev) in self.devs.iter().enumerate() {
            let at = field(path, &format!("devs[{i}]"));
            check_one_of(&dev.kind, &["c", "b"], &field(&at, "type"), problems);
            check_absolute(&dev.path, &field(&at, "path"), problems);
        }
        validate_mounts(&self.extra_mounts, &field(path, "extraMounts"), problems);
        validate_env(&self.envvar, &field(path, "envvar"), problems);
    }
}

/// Each limit one crun knows, its soft value at most its hard one.
fn validate_rlimits(limits: &[Rlimit], path: &str, problems: &mut Vec<Problem>) {
    for (i, limit) in limits.iter().enumerate() {
        if !RLIMITS.contains(&limit.kind.as_str()) {
            problems.push(Problem {
                path: format!("{path}[{i}].type"),
                reason: format!(
                    "{:?} is not a resource limit; use one of {}",
                    limit.kind,
                    RLIMITS.join(", ")
                ),
            });
        }
        if limit.soft > limit.hard {
            problems.push(Problem {
                path: format!("{path}[{i}].soft"),
                reason: format!("{} is above the hard limit {}", limit.soft, limit.hard),
            });
        }
    }
}
