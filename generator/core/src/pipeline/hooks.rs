//! "Compliant" configs: the OCI hooks that run Dobby's plugins, written
//! into the bundle instead of added by Dobby at start.

use bundlegen_protocol::runtime::{Hook, Hooks};

use super::Inputs;
use crate::bundle::Bundle;
use crate::rootfs::Rootfs;

pub fn apply(bundle: &mut Bundle<dyn Rootfs>, inputs: &Inputs<'_>, warnings: &mut Vec<String>) {
    let dobby = inputs.platform.dobby();
    let has_plugins = bundle.config.rdk_plugins.as_ref().is_some_and(|p| !p.is_empty());
    if !dobby.generate_compliant_config || !has_plugins {
        return;
    }
    let Some(parameters) = &dobby.hook_launcher_parameters_path else {
        warnings
            .push("dobby.generateCompliantConfig needs dobby.hookLauncherParametersPath; no hooks were written".into());
        return;
    };
    let parameters = inputs.substitute(parameters);
    let config = if parameters.ends_with("/config.json") {
        parameters
    } else {
        format!("{}/config.json", parameters.trim_end_matches('/'))
    };
    let hook = |name: &str| {
        vec![Hook {
            path: dobby.hook_launcher().to_string(),
            args: ["DobbyPluginLauncher", "-h", name, "-c", &config]
                .map(String::from)
                .to_vec(),
            ..Hook::default()
        }]
    };
    bundle.config.hooks = Some(Hooks {
        create_runtime: hook("createRuntime"),
        create_container: hook("createContainer"),
        poststart: hook("poststart"),
        poststop: hook("poststop"),
        ..Hooks::default()
    });
}
