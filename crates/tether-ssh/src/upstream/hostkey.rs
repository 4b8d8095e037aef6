//! Upstream host key verification (SPEC §2 `ssh_upstream_host_key_policy`, §8).
//!
//! `accept-new`: the first key seen for an upstream `host:port` is pinned in the store;
//! afterwards only that key is accepted, a different one is refused naming both
//! fingerprints. `strict`: only a key listed for the host in the operator's known_hosts
//! file (OpenSSH syntax: comma-separated patterns with `*`, `?` and `!`, `[host]:port`
//! for ports other than 22, hashed `|1|salt|hash` names, `@cert-authority` and
//! `@revoked` markers) or a host certificate signed by a matching `@cert-authority`.
//! Nothing here ever accepts by default: every failure to look something up refuses.
//!
//! Trust anchors are loaded once before the TCP connect ([`HostKeyCheck::load`]) so the
//! client can prefer the algorithms it already trusts, the way OpenSSH orders
//! `HostKeyAlgorithms`; the check itself runs in the russh client handler.

use std::path::PathBuf;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, KnownHosts, Marker};
use russh::keys::ssh_key::public::KeyData;
use russh::keys::ssh_key::{Algorithm, Certificate, HashAlg, PublicKey};
use russh::keys::PublicKeyOrCertificate;
use sha1::Sha1;
use tether_core::config::{Config, HostKeyPolicy};
use tether_store::{PinnedHostKey, Store};

use super::error::UpstreamError;

/// How upstream host keys are checked; built once from the config and shared.
#[derive(Clone)]
pub struct HostKeyCheck {
    policy: HostKeyPolicy,
    known_hosts: Option<PathBuf>,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for HostKeyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKeyCheck")
            .field("policy", &self.policy)
            .field("known_hosts", &self.known_hosts)
            .finish_non_exhaustive()
    }
}

impl HostKeyCheck {
    /// A checker for `policy`; `known_hosts` is required by `strict` (without it every
    /// connection is refused) and ignored by `accept-new`.
    pub fn new(policy: HostKeyPolicy, known_hosts: Option<PathBuf>, store: Arc<dyn Store>) -> Self {
        HostKeyCheck {
            policy,
            known_hosts,
            store,
        }
    }

    /// From `ssh_upstream_host_key_policy` and `ssh_upstream_known_hosts_file`.
    pub fn from_config(config: &Config, store: Arc<dyn Store>) -> Self {
        HostKeyCheck::new(
            config.ssh_upstream_host_key_policy,
            config
                .ssh_upstream_known_hosts_file
                .as_ref()
                .map(PathBuf::from),
            store,
        )
    }

    /// Loads what the check for `address` will trust: the pinned key, or the
    /// known_hosts entries that apply to the host.
    pub(crate) async fn load(&self, route: &str, address: &str) -> Result<Anchors, UpstreamError> {
        let host = HostName::parse(address);
        let trust = match self.policy {
            HostKeyPolicy::AcceptNew => {
                let pinned = self
                    .store
                    .pinned_host_key(address)
                    .await
                    .map_err(|source| UpstreamError::Store {
                        route: route.to_string(),
                        source,
                    })?;
                let pinned = match pinned {
                    None => None,
                    Some(p) => Some(PublicKey::from_openssh(&p.public_key).map_err(|e| {
                        UpstreamError::HostKeyUnverifiable {
                            route: route.to_string(),
                            reason: format!("pinned key for {address} is undecodable: {e}"),
                        }
                    })?),
                };
                Trust::Pinned(pinned)
            }
            HostKeyPolicy::Strict => {
                let unverifiable = |reason: String| UpstreamError::HostKeyUnverifiable {
                    route: route.to_string(),
                    reason,
                };
                let path = self.known_hosts.as_ref().ok_or_else(|| {
                    unverifiable("strict policy without ssh_upstream_known_hosts_file".into())
                })?;
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| unverifiable(format!("cannot read {}: {e}", path.display())))?;
                Trust::KnownHosts(matching_entries(&text, &host))
            }
        };
        Ok(Anchors {
            route: route.to_string(),
            address: address.to_string(),
            host,
            trust,
            store: self.store.clone(),
        })
    }
}

/// The upstream's name as known_hosts sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostName {
    /// Host without brackets or port (`10.0.0.5`, `::1`, `prod.example.com`).
    host: String,
    /// `host` for port 22, `[host]:port` otherwise.
    lookup: String,
}

impl HostName {
    /// From `host:port`, `[v6]:port` or a bare host (port 22).
    pub(crate) fn parse(address: &str) -> HostName {
        let (host, port) = if let Some(rest) = address.strip_prefix('[') {
            match rest.split_once(']') {
                Some((h, tail)) => (h, tail.strip_prefix(':').unwrap_or("22")),
                None => (rest, "22"),
            }
        } else {
            match address.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, p),
                _ => (address, "22"),
            }
        };
        let host = host.to_ascii_lowercase();
        let lookup = if port == "22" {
            host.clone()
        } else {
            format!("[{host}]:{port}")
        };
        HostName { host, lookup }
    }
}

/// What one connection trusts, loaded before connecting.
pub(crate) struct Anchors {
    route: String,
    address: String,
    host: HostName,
    trust: Trust,
    store: Arc<dyn Store>,
}

enum Trust {
    /// `accept-new`: the pinned key, if any.
    Pinned(Option<PublicKey>),
    /// `strict`: known_hosts entries whose host patterns match.
    KnownHosts(Vec<Entry>),
}

fn sha256(key: &KeyData) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

impl Anchors {
    /// Host key algorithms to prefer, most preferred first, and the algorithms whose
    /// certificate variant to ask for (only when a host CA applies).
    pub(crate) fn preferred_algorithms(&self) -> (Vec<Algorithm>, Vec<Algorithm>) {
        let default = russh::Preferred::DEFAULT.key.to_vec();
        let (known, certs): (Vec<Algorithm>, bool) = match &self.trust {
            Trust::Pinned(p) => (p.iter().map(PublicKey::algorithm).collect(), false),
            Trust::KnownHosts(entries) => (
                entries
                    .iter()
                    .filter(|e| e.marker().is_none())
                    .map(|e| e.public_key().algorithm())
                    .collect(),
                entries
                    .iter()
                    .any(|e| e.marker() == Some(&Marker::CertAuthority)),
            ),
        };
        let mut order = Vec::new();
        for alg in known {
            let variants = if matches!(alg, Algorithm::Rsa { .. }) {
                vec![
                    Algorithm::Rsa {
                        hash: Some(HashAlg::Sha512),
                    },
                    Algorithm::Rsa {
                        hash: Some(HashAlg::Sha256),
                    },
                ]
            } else {
                vec![alg]
            };
            for v in variants {
                if !order.contains(&v) {
                    order.push(v);
                }
            }
        }
        for alg in &default {
            if !order.contains(alg) {
                order.push(alg.clone());
            }
        }
        let cert_algs = if certs { default } else { Vec::new() };
        (order, cert_algs)
    }

    /// Checks the presented key; `Ok` carries the accepted key's fingerprint.
    pub(crate) async fn verify(
        &self,
        presented: &PublicKeyOrCertificate,
        now: u64,
    ) -> Result<String, UpstreamError> {
        match &self.trust {
            Trust::Pinned(pinned) => {
                let key = match presented {
                    PublicKeyOrCertificate::PublicKey { key, .. } => key.key_data().clone(),
                    PublicKeyOrCertificate::Certificate(c) => c.public_key().clone(),
                };
                self.verify_pinned(pinned.as_ref(), key).await
            }
            Trust::KnownHosts(entries) => match presented {
                PublicKeyOrCertificate::PublicKey { key, .. } => {
                    self.verify_known_key(entries, key.key_data())
                }
                PublicKeyOrCertificate::Certificate(cert) => {
                    self.verify_known_cert(entries, cert, now)
                }
            },
        }
    }

    async fn verify_pinned(
        &self,
        pinned: Option<&PublicKey>,
        key: KeyData,
    ) -> Result<String, UpstreamError> {
        let got = sha256(&key);
        let expected = match pinned {
            Some(p) => p.key_data().clone(),
            None => {
                let line = PublicKey::from(key.clone()).to_openssh().map_err(|e| {
                    UpstreamError::HostKeyUnverifiable {
                        route: self.route.clone(),
                        reason: format!("cannot encode the presented key: {e}"),
                    }
                })?;
                let now_pinned = self
                    .store
                    .pin_host_key(&PinnedHostKey {
                        address: self.address.clone(),
                        public_key: line,
                    })
                    .await
                    .map_err(|source| UpstreamError::Store {
                        route: self.route.clone(),
                        source,
                    })?;
                let winner = PublicKey::from_openssh(&now_pinned.public_key).map_err(|e| {
                    UpstreamError::HostKeyUnverifiable {
                        route: self.route.clone(),
                        reason: format!("pinned key is undecodable: {e}"),
                    }
                })?;
                if winner.key_data() == &key {
                    tracing::info!(route = %self.route, address = %self.address, fingerprint = %got,
                        "pinned new upstream host key");
                }
                winner.key_data().clone()
            }
        };
        if expected == key {
            Ok(got)
        } else {
            Err(UpstreamError::HostKeyChanged {
                route: self.route.clone(),
                expected: sha256(&expected),
                got,
            })
        }
    }

    fn untrusted(&self, key: &KeyData, reason: String) -> UpstreamError {
        UpstreamError::HostKeyUntrusted {
            route: self.route.clone(),
            fingerprint: sha256(key),
            reason,
        }
    }

    fn is_revoked(entries: &[Entry], key: &KeyData) -> bool {
        entries
            .iter()
            .any(|e| e.marker() == Some(&Marker::Revoked) && e.public_key().key_data() == key)
    }

    fn verify_known_key(&self, entries: &[Entry], key: &KeyData) -> Result<String, UpstreamError> {
        if Self::is_revoked(entries, key) {
            return Err(self.untrusted(key, "the key is marked @revoked".into()));
        }
        let plain = || entries.iter().filter(|e| e.marker().is_none());
        if plain().any(|e| e.public_key().key_data() == key) {
            return Ok(sha256(key));
        }
        // A known key of the same type that differs is a changed key, as in OpenSSH.
        if let Some(known) = plain().find(|e| e.public_key().algorithm() == key.algorithm()) {
            return Err(UpstreamError::HostKeyChanged {
                route: self.route.clone(),
                expected: sha256(known.public_key().key_data()),
                got: sha256(key),
            });
        }
        Err(self.untrusted(
            key,
            format!("no known_hosts entry for {}", self.host.lookup),
        ))
    }

    fn verify_known_cert(
        &self,
        entries: &[Entry],
        cert: &Certificate,
        now: u64,
    ) -> Result<String, UpstreamError> {
        let key = cert.public_key();
        let ca = cert.signature_key();
        if Self::is_revoked(entries, key) || Self::is_revoked(entries, ca) {
            return Err(self.untrusted(key, "the key or its CA is marked @revoked".into()));
        }
        let cas: Vec<_> = entries
            .iter()
            .filter(|e| e.marker() == Some(&Marker::CertAuthority))
            .map(|e| e.public_key().fingerprint(HashAlg::Sha256))
            .collect();
        if !cas.is_empty() {
            let principal_ok = cert.valid_principals().is_empty()
                || cert
                    .valid_principals()
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(&self.host.host));
            let valid = cert.cert_type() == CertType::Host
                && cert.critical_options().is_empty()
                && principal_ok
                && cert.validate_at(now, &cas).is_ok();
            if valid {
                return Ok(sha256(key));
            }
            tracing::warn!(route = %self.route, key_id = %cert.key_id(),
                "upstream host certificate not valid for this host; checking the plain key");
        }
        // Like OpenSSH: a certificate from an untrusted CA falls back to its key.
        self.verify_known_key(entries, key)
    }
}

/// The known_hosts entries whose host patterns match `host`. Unparsable lines are
/// skipped with a warning (as OpenSSH does).
fn matching_entries(text: &str, host: &HostName) -> Vec<Entry> {
    let mut out = Vec::new();
    for (n, entry) in KnownHosts::new(text).enumerate() {
        match entry {
            Ok(e) if host_matches(e.host_patterns(), host) => out.push(e),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(entry = n + 1, error = %e, "skipping unparsable known_hosts entry")
            }
        }
    }
    out
}

/// OpenSSH host matching: a hashed name matches the exact lookup name; a pattern list
/// matches when some pattern matches and no negated (`!`) pattern does.
fn host_matches(patterns: &HostPatterns, host: &HostName) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(salt) else {
                return false;
            };
            mac.chain_update(host.lookup.as_bytes())
                .verify_slice(hash)
                .is_ok()
        }
        HostPatterns::Patterns(list) => {
            let mut matched = false;
            for pattern in list {
                if let Some(negated) = pattern.strip_prefix('!') {
                    if glob(negated.as_bytes(), host.lookup.as_bytes()) {
                        return false;
                    }
                } else if glob(pattern.as_bytes(), host.lookup.as_bytes()) {
                    matched = true;
                }
            }
            matched
        }
    }
}

/// `*` / `?` wildcard match, ASCII case-insensitive.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => {
            let rest = trim_stars(rest);
            if rest.is_empty() {
                return true;
            }
            (0..=text.len()).any(|i| text.get(i..).is_some_and(|t| glob(rest, t)))
        }
        Some((b'?', rest)) => text.split_first().is_some_and(|(_, t)| glob(rest, t)),
        Some((c, rest)) => text
            .split_first()
            .is_some_and(|(t0, t)| t0.eq_ignore_ascii_case(c) && glob(rest, t)),
    }
}

fn trim_stars(mut p: &[u8]) -> &[u8] {
    while let Some((b'*', rest)) = p.split_first() {
        p = rest;
    }
    p
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert_eq!(HostName::parse("10.0.0.5:22").lookup, "10.0.0.5");
        assert_eq!(HostName::parse("127.0.0.1:2222").lookup, "[127.0.0.1]:2222");
        assert_eq!(HostName::parse("[::1]:2222").lookup, "[::1]:2222");
        assert_eq!(HostName::parse("[::1]:2222").host, "::1");
        assert_eq!(
            HostName::parse("Prod.Example.com").lookup,
            "prod.example.com"
        );
    }

    #[test]
    fn globs() {
        assert!(glob(b"*.example.com", b"a.example.com"));
        assert!(!glob(b"*.example.com", b"example.com"));
        assert!(glob(b"10.0.0.?", b"10.0.0.5"));
        assert!(glob(b"[127.0.0.1]:*", b"[127.0.0.1]:2222"));
        assert!(glob(b"***", b""));
        assert!(!glob(b"a", b"ab"));
    }

    #[test]
    fn patterns_with_negation() {
        let h = HostName::parse("db.example.com:22");
        let p: HostPatterns = "*.example.com,!db.example.com".parse().unwrap();
        assert!(!host_matches(&p, &h));
        let h = HostName::parse("web.example.com:22");
        assert!(host_matches(&p, &h));
    }

    #[test]
    fn hashed_names() {
        // `ssh-keygen -H` form of "[127.0.0.1]:2222", salt = 20 zero bytes.
        let salt = [0u8; 20];
        let mac = <Hmac<Sha1> as KeyInit>::new_from_slice(&salt)
            .unwrap()
            .chain_update(b"[127.0.0.1]:2222");
        let hash: [u8; 20] = mac.finalize().into_bytes().into();
        let p = HostPatterns::HashedName {
            salt: salt.to_vec(),
            hash,
        };
        assert!(host_matches(&p, &HostName::parse("127.0.0.1:2222")));
        assert!(!host_matches(&p, &HostName::parse("127.0.0.1:2223")));
    }
}
