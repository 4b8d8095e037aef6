//! Short-lived OpenSSH user certificates for upstream logins (SPEC §8).
//!
//! For every upstream connection tether generates a fresh ed25519 key and signs it
//! with the user CA: random serial, key id = the user's email (so the upstream's
//! auth log names the person), principals = [login name], valid from one minute ago
//! to one hour from now but never past the client binding's expiry, and only the
//! `permit-*` extensions the route's `ssh_permit` allows ([`extensions`]). The
//! upstream trusts the CA with `TrustedUserCAKeys`.
//!
//! Randomness comes from the OS CSPRNG through the fallible `getrandom` call, so an
//! RNG failure is an error instead of a panic. Pure functions of their inputs (the
//! current time is a parameter); no I/O, no tokio.

use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
use russh::keys::ssh_key::{Certificate, PrivateKey, PublicKey};
use tether_core::config::Permit;

/// How long before `now` a certificate becomes valid (clock skew allowance).
pub const VALID_BEFORE_NOW_SECS: u64 = 60;
/// The longest a certificate is valid after `now`.
pub const MAX_LIFETIME_SECS: u64 = 3600;

/// Every extension a certificate may carry (empty values), as OpenSSH names them.
pub const EXTENSIONS: [&str; 5] = [
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
];

/// The extensions a certificate for a route with `permit` carries: one per
/// switch that is on, and `permit-user-rc` always (`~/.ssh/rc` is the upstream
/// user's own start-up file; it grants nothing the login does not have).
pub fn extensions(permit: Permit) -> Vec<&'static str> {
    [
        (permit.x11_forwarding, "permit-X11-forwarding"),
        (permit.agent_forwarding, "permit-agent-forwarding"),
        (permit.port_forwarding, "permit-port-forwarding"),
        (permit.pty, "permit-pty"),
        (true, "permit-user-rc"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

/// Why a certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The client binding is already expired at `now`: nothing may be signed for it.
    #[error("the client binding has expired")]
    BindingExpired,
    /// The OS random number generator failed.
    #[error("random number generator failed: {0}")]
    Rng(String),
    /// ssh-key refused a field or the CA could not sign.
    #[error("certificate signing failed: {0}")]
    Sign(String),
}

/// Fills `buf` from the OS CSPRNG.
fn os_random(buf: &mut [u8]) -> Result<(), CertError> {
    getrandom::getrandom(buf).map_err(|e| CertError::Rng(e.to_string()))
}

/// A random `u64` from the OS CSPRNG (certificate serials).
fn random_u64() -> Result<u64, CertError> {
    let mut bytes = [0u8; 8];
    os_random(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

/// A fresh ed25519 key from the OS CSPRNG (one per upstream connection).
pub fn ephemeral_ed25519() -> Result<PrivateKey, CertError> {
    let mut seed = [0u8; 32];
    os_random(&mut seed)?;
    let keypair = Ed25519Keypair::from_seed(&seed);
    PrivateKey::new(KeypairData::Ed25519(keypair), "tether ephemeral")
        .map_err(|e| CertError::Sign(e.to_string()))
}

/// Signs an OpenSSH user certificate for `subject_key`.
///
/// `key_id` is the user's email, `login` the only principal, `permit` what the
/// route allows ([`extensions`]). Validity runs from
/// `now - 60 s` to `min(now + 3600 s, not_after_cap)`; all times are Unix seconds.
/// `not_after_cap` is the client binding's expiry; a binding that is already expired
/// yields [`CertError::BindingExpired`].
///
/// The nonce is 32 bytes from the OS CSPRNG — what `Builder::new_with_random_nonce`
/// does, without its infallible-RNG requirement.
pub fn sign_user_cert(
    ca: &PrivateKey,
    subject_key: &PublicKey,
    key_id: &str,
    login: &str,
    permit: Permit,
    not_after_cap: u64,
    now: u64,
) -> Result<Certificate, CertError> {
    if not_after_cap <= now {
        return Err(CertError::BindingExpired);
    }
    let valid_after = now.saturating_sub(VALID_BEFORE_NOW_SECS);
    let valid_before = now.saturating_add(MAX_LIFETIME_SECS).min(not_after_cap);

    let mut nonce = vec![0u8; Builder::RECOMMENDED_NONCE_SIZE];
    os_random(&mut nonce)?;
    let sign_err = |e: russh::keys::ssh_key::Error| CertError::Sign(e.to_string());

    let mut builder = Builder::new(
        nonce,
        subject_key.key_data().clone(),
        valid_after,
        valid_before,
    )
    .map_err(sign_err)?;
    builder
        .serial(random_u64()?)
        .map_err(sign_err)?
        .key_id(key_id)
        .map_err(sign_err)?
        .cert_type(CertType::User)
        .map_err(sign_err)?
        .valid_principal(login)
        .map_err(sign_err)?;
    for ext in extensions(permit) {
        builder.extension(ext, "").map_err(sign_err)?;
    }
    builder.sign(ca).map_err(sign_err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use russh::keys::ssh_key::HashAlg;

    const NOW: u64 = 1_800_000_000;

    fn ca() -> PrivateKey {
        ephemeral_ed25519().unwrap()
    }

    #[test]
    fn fields_are_as_specified() {
        let ca = ca();
        let subject = ephemeral_ed25519().unwrap();
        let cert = sign_user_cert(
            &ca,
            subject.public_key(),
            "alice@example.com",
            "alice",
            Permit::ALL,
            NOW + 48 * 3600,
            NOW,
        )
        .unwrap();
        assert_eq!(cert.key_id(), "alice@example.com");
        assert_eq!(cert.cert_type(), CertType::User);
        assert_eq!(cert.valid_principals(), ["alice".to_string()]);
        assert_eq!(cert.valid_after(), NOW - 60);
        assert_eq!(cert.valid_before(), NOW + 3600);
        assert_eq!(cert.public_key(), subject.public_key().key_data());
        assert!(cert.critical_options().is_empty());
        let mut exts: Vec<_> = cert.extensions().iter().collect();
        exts.sort();
        assert_eq!(exts.len(), 5);
        for (name, value) in exts {
            assert!(EXTENSIONS.contains(&name.as_str()), "{name}");
            assert!(value.is_empty());
        }
    }

    /// Only what the route permits: the defaults (pty only) leave out agent,
    /// port and X11 forwarding; all off leaves `permit-user-rc` alone.
    #[test]
    fn extensions_follow_the_route() {
        let ca = ca();
        let subject = ephemeral_ed25519().unwrap();
        let names = |permit| {
            let cert = sign_user_cert(&ca, subject.public_key(), "a@b", "a", permit, NOW + 10, NOW)
                .unwrap();
            let mut names: Vec<String> = cert.extensions().keys().cloned().collect();
            names.sort();
            names
        };
        assert_eq!(names(Permit::default()), ["permit-pty", "permit-user-rc"]);
        assert_eq!(
            names(Permit {
                pty: false,
                ..Permit::default()
            }),
            ["permit-user-rc"]
        );
        assert_eq!(
            names(Permit {
                agent_forwarding: true,
                port_forwarding: true,
                ..Permit::default()
            }),
            [
                "permit-agent-forwarding",
                "permit-port-forwarding",
                "permit-pty",
                "permit-user-rc"
            ]
        );
        assert_eq!(names(Permit::ALL).len(), EXTENSIONS.len());
    }

    #[test]
    fn serials_and_nonces_are_random() {
        let ca = ca();
        let subject = ephemeral_ed25519().unwrap();
        let a = sign_user_cert(
            &ca,
            subject.public_key(),
            "a@b",
            "a",
            Permit::ALL,
            NOW + 10,
            NOW,
        )
        .unwrap();
        let b = sign_user_cert(
            &ca,
            subject.public_key(),
            "a@b",
            "a",
            Permit::ALL,
            NOW + 10,
            NOW,
        )
        .unwrap();
        assert_ne!(a.serial(), b.serial());
        assert_ne!(a.nonce(), b.nonce());
    }

    #[test]
    fn validity_is_capped_by_binding_expiry() {
        let ca = ca();
        let subject = ephemeral_ed25519().unwrap();
        let cert = sign_user_cert(
            &ca,
            subject.public_key(),
            "a@b",
            "a",
            Permit::ALL,
            NOW + 120,
            NOW,
        )
        .unwrap();
        assert_eq!(cert.valid_before(), NOW + 120);
        assert_eq!(cert.valid_after(), NOW - 60);
    }

    #[test]
    fn expired_binding_is_refused() {
        let ca = ca();
        let subject = ephemeral_ed25519().unwrap();
        let err = sign_user_cert(&ca, subject.public_key(), "a@b", "a", Permit::ALL, NOW, NOW)
            .unwrap_err();
        assert!(matches!(err, CertError::BindingExpired));
    }

    #[test]
    fn validates_against_the_ca_only() {
        let ca = ca();
        let other = ephemeral_ed25519().unwrap();
        let subject = ephemeral_ed25519().unwrap();
        let cert = sign_user_cert(
            &ca,
            subject.public_key(),
            "a@b",
            "a",
            Permit::ALL,
            NOW + 7200,
            NOW,
        )
        .unwrap();
        let ca_fp = ca.public_key().fingerprint(HashAlg::Sha256);
        let other_fp = other.public_key().fingerprint(HashAlg::Sha256);
        cert.validate_at(NOW, [&ca_fp]).unwrap();
        assert!(cert.validate_at(NOW, [&other_fp]).is_err());
        // outside the window
        assert!(cert.validate_at(NOW + 3601, [&ca_fp]).is_err());
        assert!(cert.validate_at(NOW - 61, [&ca_fp]).is_err());
        // round-trips through the OpenSSH text form
        let text = cert.to_openssh().unwrap();
        let parsed = Certificate::from_openssh(&text).unwrap();
        parsed.validate_at(NOW, [&ca_fp]).unwrap();
    }
}
