//! Bearer tokens with a role. Tokens are random, shown once when created,
//! and stored as their sha256 only.

use bundlegen_protocol::digest::Sha256Digest;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::db::DbError;
use crate::store::Store;

/// Why a caller may not do something.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token, or one the service does not know.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A known token whose role does not allow this.
    #[error("the {} role may not do this", .0.as_str())]
    Forbidden(Role),
    /// A device token used for another platform than its own.
    #[error("this device token belongs to platform {own}, not {asked}")]
    OtherPlatform { own: String, asked: String },
    #[error(transparent)]
    Database(#[from] DbError),
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything, including tokens.
    Admin,
    /// Platforms, apps and bundle requests.
    PlatformTeam,
    /// What a box does: look bundles up, download them, upload its probe.
    Device,
    /// Reads `/metrics`, nothing else (for a monitoring system).
    Metrics,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::PlatformTeam => "platform-team",
            Role::Device => "device",
            Role::Metrics => "metrics",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "platform-team" => Some(Role::PlatformTeam),
            "device" => Some(Role::Device),
            "metrics" => Some(Role::Metrics),
            _ => None,
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token_id: String,
    pub name: String,
    pub role: Role,
    /// The platform a device token belongs to.
    pub platform: Option<String>,
}

impl Caller {
    /// Fails unless the caller has one of `roles` (admin always may).
    pub fn require(&self, roles: &[Role]) -> Result<(), AuthError> {
        if self.role == Role::Admin || roles.contains(&self.role) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(self.role))
        }
    }

    /// Fails for a device token of another platform, and for roles that
    /// read no platform; admins and platform teams act on every platform.
    pub fn require_platform(&self, platform: &str) -> Result<(), AuthError> {
        match (self.role, &self.platform) {
            (Role::Device, Some(own)) if own == platform => Ok(()),
            (Role::Device, own) => Err(AuthError::OtherPlatform {
                own: own.clone().unwrap_or_else(|| "(none)".into()),
                asked: platform.to_string(),
            }),
            (Role::Admin | Role::PlatformTeam, _) => Ok(()),
            (Role::Metrics, _) => Err(AuthError::Forbidden(self.role)),
        }
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buffer)
        .expect("the system's random number generator");
    bundlegen_protocol::digest::to_hex(&buffer)
}

/// A new random token (`bgt_` and 64 hex digits) and its id.
pub fn new_token() -> (String, String) {
    (format!("tok-{}", random_hex(8)), format!("bgt_{}", random_hex(32)))
}

/// A random identifier with a prefix (`job-...`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", random_hex(12))
}

/// A rough upper bound of a secret's entropy: its length times the bits of
/// the alphabet it draws from (the distinct characters it uses).
pub fn entropy_bits(secret: &str) -> f64 {
    let distinct: std::collections::BTreeSet<char> = secret.chars().collect();
    if distinct.len() < 2 {
        return 0.0;
    }
    secret.chars().count() as f64 * (distinct.len() as f64).log2()
}

pub fn hash_token(token: &str) -> String {
    Sha256Digest::of(token.trim().as_bytes()).hex()
}

/// Finds the caller of a request from its `Authorization: Bearer` header.
pub async fn authenticate(store: &Store, header: Option<&str>) -> Result<Caller, AuthError> {
    let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return Err(AuthError::Unauthenticated("an Authorization: Bearer token is required"));
    };
    let record = store
        .token_by_hash(&hash_token(token))
        .await?
        .ok_or(AuthError::Unauthenticated("unknown token"))?;
    if record.revoked_at.is_some() {
        return Err(AuthError::Unauthenticated("revoked token"));
    }
    if record.expires_at.is_some_and(|at| at <= crate::store::now()) {
        return Err(AuthError::Unauthenticated("expired token"));
    }
    let role = Role::parse(&record.role).ok_or(AuthError::Unauthenticated("token with an unknown role"))?;
    // Recorded at most once a minute: most requests need no write.
    let recent = record
        .last_used_at
        .is_some_and(|at| at >= crate::store::now() - crate::store::LAST_USE_GRANULARITY);
    if !recent && let Err(e) = store.token_used(&record.id).await {
        tracing::warn!("token {}: recording its use: {e}", record.id);
    }
    Ok(Caller {
        token_id: record.id,
        name: record.name,
        role,
        platform: record.platform,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let (id_a, a) = new_token();
        let (id_b, b) = new_token();
        assert_ne!(a, b);
        assert_ne!(id_a, id_b);
        assert!(a.starts_with("bgt_") && a.len() == 68);
        assert_eq!(hash_token(&a), hash_token(&format!("{a}\n")));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert!(!hash_token(&a).contains(&a[4..]));
    }

    #[test]
    fn admins_may_do_everything_others_what_they_are_given() {
        let caller = |role| Caller {
            token_id: "t".into(),
            name: "n".into(),
            role,
            platform: None,
        };
        assert!(caller(Role::Admin).require(&[Role::Device]).is_ok());
        assert!(caller(Role::Device).require(&[Role::Device]).is_ok());
        assert!(caller(Role::Device).require(&[Role::PlatformTeam]).is_err());
        // A monitoring system's token reads metrics and no platform.
        assert!(
            caller(Role::Metrics)
                .require(&[Role::PlatformTeam, Role::Metrics])
                .is_ok()
        );
        assert!(
            caller(Role::Metrics)
                .require(&[Role::PlatformTeam, Role::Device])
                .is_err()
        );
        assert!(caller(Role::Metrics).require_platform("rpi3").is_err());
        assert!(caller(Role::PlatformTeam).require_platform("rpi3").is_ok());
        for role in [Role::Admin, Role::PlatformTeam, Role::Device, Role::Metrics] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
    }

    #[test]
    fn device_tokens_act_for_their_platform_only() {
        let device = |platform: Option<&str>| Caller {
            token_id: "t".into(),
            name: "box-1".into(),
            role: Role::Device,
            platform: platform.map(str::to_string),
        };
        assert!(device(Some("rpi3")).require_platform("rpi3").is_ok());
        let other = device(Some("rpi3")).require_platform("rpi4").unwrap_err();
        assert_eq!(
            other.to_string(),
            "this device token belongs to platform rpi3, not rpi4"
        );
        assert!(
            device(None).require_platform("rpi3").is_err(),
            "an unbound device token acts for none"
        );
        let team = Caller {
            role: Role::PlatformTeam,
            ..device(None)
        };
        assert!(team.require_platform("rpi4").is_ok());
    }

    #[test]
    fn entropy_is_length_times_alphabet_bits() {
        let (_, token) = new_token();
        assert!(entropy_bits(&token) >= 256.0, "our tokens are strong enough");
        assert_eq!(entropy_bits(&"a".repeat(100)), 0.0);
        assert!(entropy_bits("password123") < 64.0);
    }
}
