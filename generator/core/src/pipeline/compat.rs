//! Can this app run on this platform? Everything BundleGen checked (graphics,
//! features, network type, storage sizes), plus what it forgot: the image's
//! architecture and the app's minimum RDK version. All problems are reported
//! at once (exit code 2).

use std::cmp::Ordering;

use bundlegen_protocol::config::app::{AppMetadata, Volume};
use bundlegen_protocol::config::platform::StorageLimits;

use super::{Inputs, StageError};
use crate::image::TargetPlatform;

/// Checks compatibility; returns the app metadata with volumes below the
/// platform's minimum raised to it (as BundleGen does, with a warning).
pub fn check(inputs: &Inputs<'_>, warnings: &mut Vec<String>) -> Result<AppMetadata, StageError> {
    let platform = inputs.platform;
    let mut app = inputs.app.clone();
    let mut problems = Vec::new();

    let wanted = TargetPlatform::new(&platform.os, &platform.arch.arch, platform.arch.variant.as_deref());
    if wanted.match_score(inputs.image_platform).is_none() {
        problems.push(format!(
            "the image is built for {}, the platform is {wanted}",
            inputs.image_platform
        ));
    }
    if app.graphics && !platform.hardware.graphics {
        problems.push("the app needs graphics, which the platform does not support".into());
    }
    let supported = &platform.rdk.supported_features;
    if !supported.is_empty() {
        let missing: Vec<&String> = app.features.iter().filter(|f| !supported.contains(f)).collect();
        if !missing.is_empty() {
            problems.push(format!(
                "the app needs features the platform does not support: {missing:?}"
            ));
        }
    }
    if !platform.network.options.contains(&app.network.kind) {
        problems.push(format!(
            "the app needs {:?} networking; the platform offers {:?}",
            app.network.kind, platform.network.options
        ));
    }
    if let Some(minimum) = &app.min_rdk_version
        && compare_versions(&platform.rdk.version, minimum) == Ordering::Less
    {
        problems.push(format!(
            "the app needs RDK {minimum} or later; the platform runs {}",
            platform.rdk.version
        ));
    }
    let storage = platform.storage.as_ref();
    let persistent_limits = storage.and_then(|s| s.persistent.as_ref()).map(|p| p.limits());
    match (&persistent_limits, app.storage.persistent.is_empty()) {
        (None, false) => problems.push("the app needs persistent storage, which the platform does not offer".into()),
        (Some(limits), _) => check_volumes(
            "persistent",
            &mut app.storage.persistent,
            limits,
            &mut problems,
            warnings,
        ),
        (None, true) => {}
    }
    match storage.and_then(|s| s.temp.as_ref()) {
        Some(limits) => check_volumes("temp", &mut app.storage.temp, limits, &mut problems, warnings),
        None if !app.storage.temp.is_empty() => {
            warnings.push("the platform sets no limits for temporary storage".into());
        }
        None => {}
    }
    for persistent in &app.storage.persistent {
        if app.storage.temp.iter().any(|t| t.path == persistent.path) {
            problems.push(format!(
                "{} is both a persistent and a temporary volume",
                persistent.path
            ));
        }
    }
    if problems.is_empty() {
        Ok(app)
    } else {
        Err(StageError::Incompatible(problems))
    }
}

fn check_volumes(
    kind: &str,
    volumes: &mut [Volume],
    limits: &StorageLimits,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    for volume in volumes.iter_mut() {
        if let Some(max) = limits.max_size
            && volume.size > max
        {
            problems.push(format!(
                "{kind} volume {} asks for {} ({} allowed)",
                volume.path, volume.size, max
            ));
        }
        if let Some(min) = limits.min_size
            && volume.size < min
        {
            warnings.push(format!(
                "{kind} volume {} raised from {} to the platform's minimum {min}",
                volume.path, volume.size
            ));
            volume.size = min;
        }
    }
    let total: u64 = volumes.iter().map(|v| v.size.bytes()).sum();
    if let Some(max) = limits.max_total_size
        && total > max.bytes()
    {
        problems.push(format!("{kind} volumes total {total} bytes ({} allowed)", max.bytes()));
    }
}

/// Compares versions like `2020Q4` and `2021Q1`, or `1.2.10` and `1.2.9`:
/// digit runs numerically, everything else as text.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn tokens(text: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in text.chars().filter(|c| c.is_ascii_alphanumeric()) {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, token)) if *d == digit => token.push(c.to_ascii_lowercase()),
                _ => out.push((digit, c.to_ascii_lowercase().to_string())),
            }
        }
        out
    }
    let (a, b) = (tokens(a), tokens(b));
    for ((digit_a, x), (digit_b, y)) in a.iter().zip(&b) {
        let order = match (digit_a, digit_b) {
            (true, true) => x
                .trim_start_matches('0')
                .len()
                .cmp(&y.trim_start_matches('0').len())
                .then(x.cmp(y)),
            _ => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdk_versions_compare_by_parts() {
        assert_eq!(compare_versions("2020Q4", "2021Q1"), Ordering::Less);
        assert_eq!(compare_versions("2021Q1", "2020Q4"), Ordering::Greater);
        assert_eq!(compare_versions("1.2.10", "1.2.9"), Ordering::Greater);
        assert_eq!(compare_versions("2020q4", "2020Q4"), Ordering::Equal);
        assert_eq!(compare_versions("6.1", "6.1.2"), Ordering::Less);
    }
}
