//! Verifying a workload's OIDC token (a CI job's JWT) against the trusted issuers
//! of `workload_identity`: the issuer's discovery document and JWKS (fetched,
//! bounded, cached five minutes, fetched again once for an unknown `kid`), the
//! signature, `iss`, `aud`, `exp`, `nbf` (10 s leeway) and a `jti`. Replay of a
//! `jti` is refused through the store (see the handler). Tokens are never logged.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tether_core::config::{Config, WorkloadIssuer};
use tokio::sync::Mutex;

/// Longest token accepted (GitHub's are about 1.5 KB).
pub(crate) const MAX_TOKEN: usize = 16 * 1024;
/// Largest discovery document or JWKS read.
const MAX_DOCUMENT: usize = 256 * 1024;
/// How long a JWKS is used before it is fetched again.
const JWKS_TTL: Duration = Duration::from_secs(300);
/// An unknown `kid` fetches the JWKS again at most this often per issuer.
const REFETCH_EVERY: Duration = Duration::from_secs(30);
/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY: u64 = 10;
/// Signature algorithms accepted (asymmetric only: `none` and HMAC never).
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a token was not accepted (401), or the issuer could not be reached (502).
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    /// The token is not acceptable; the text is the client's reason.
    #[error("{0}")]
    Invalid(String),
    /// The issuer's discovery or JWKS could not be fetched: fail closed.
    #[error("the token's issuer could not be reached: {0}")]
    IssuerUnreachable(String),
}

/// A verified token: its issuer entry and its claims.
pub(crate) struct Verified<'c> {
    pub(crate) issuer: &'c WorkloadIssuer,
    pub(crate) claims: Map<String, Value>,
    pub(crate) subject: String,
    pub(crate) jti: String,
    pub(crate) expires_at: i64,
}

struct Cached {
    keys: JwkSet,
    fetched: Instant,
}

/// The JWKS cache of every trusted issuer.
pub(crate) struct Verifier {
    http: Result<reqwest::Client, String>,
    cache: Mutex<HashMap<String, Cached>>,
}

impl Verifier {
    pub(crate) fn new() -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| e.to_string());
        Verifier {
            http,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies `token` against the issuer it names, if that issuer is trusted.
    pub(crate) async fn verify<'c>(
        &self,
        config: &'c Config,
        token: &str,
        now_secs: i64,
    ) -> Result<Verified<'c>, TokenError> {
        let invalid = |m: &str| TokenError::Invalid(m.to_string());
        if token.len() > MAX_TOKEN {
            return Err(invalid("the token is too long"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("not a JWT"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(invalid("the token's signature algorithm is not accepted"));
        }
        let claimed = unverified_issuer(token).ok_or_else(|| invalid("the token has no iss"))?;
        let issuer = config
            .workload_identity
            .iter()
            .find(|w| w.issuer == claimed.trim_end_matches('/'))
            .ok_or_else(|| invalid("the token's issuer is not trusted"))?;
        let key = self.key(issuer, header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[claimed.as_str()]);
        validation.set_audience(&[issuer.audience.as_str()]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                TokenError::Invalid(
                    match e.kind() {
                        K::ExpiredSignature => "the token has expired",
                        K::ImmatureSignature => "the token is not valid yet (nbf)",
                        K::InvalidAudience => "the token's audience is not this gateway",
                        K::InvalidIssuer => "the token's issuer is not trusted",
                        K::InvalidSignature => "the token's signature does not verify",
                        K::MissingRequiredClaim(_) => "the token lacks exp, iss, aud or sub",
                        _ => "the token cannot be verified",
                    }
                    .to_string(),
                )
            })?;
        let claims = data.claims;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("the token has no sub"))?
            .to_string();
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| invalid("the token has no jti (replay cannot be checked)"))?
            .to_string();
        let expires_at = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        if expires_at.saturating_add(LEEWAY as i64) <= now_secs {
            return Err(invalid("the token has expired"));
        }
        Ok(Verified {
            issuer,
            claims,
            subject,
            jti,
            expires_at,
        })
    }

    /// The decoding key for `kid` from the issuer's JWKS (cached).
    async fn key(
        &self,
        issuer: &WorkloadIssuer,
        kid: Option<&str>,
    ) -> Result<DecodingKey, TokenError> {
        let mut cache = self.cache.lock().await;
        // Fetched when older than the cache lifetime, and once more (not too
        // often) for a kid it does not have: a key rotated in since.
        let age = |cache: &HashMap<String, Cached>| {
            cache.get(&issuer.issuer).map(|c| c.fetched.elapsed())
        };
        if age(&cache).is_none_or(|a| a >= JWKS_TTL) {
            self.refresh(&mut cache, issuer).await?;
        }
        if let Some(k) = cache.get(&issuer.issuer).and_then(|c| find(&c.keys, kid)) {
            return Ok(k);
        }
        if age(&cache).is_none_or(|a| a >= REFETCH_EVERY) {
            self.refresh(&mut cache, issuer).await?;
        }
        cache
            .get(&issuer.issuer)
            .and_then(|c| find(&c.keys, kid))
            .ok_or_else(|| {
                TokenError::Invalid("the token's signing key is not in the issuer's JWKS".into())
            })
    }

    /// Fetches `issuer`'s JWKS into the cache.
    async fn refresh(
        &self,
        cache: &mut HashMap<String, Cached>,
        issuer: &WorkloadIssuer,
    ) -> Result<(), TokenError> {
        let keys = self.fetch_jwks(issuer).await?;
        cache.insert(
            issuer.issuer.clone(),
            Cached {
                keys,
                fetched: Instant::now(),
            },
        );
        Ok(())
    }

    async fn fetch_jwks(&self, issuer: &WorkloadIssuer) -> Result<JwkSet, TokenError> {
        let discovery = format!("{}/.well-known/openid-configuration", issuer.issuer);
        let doc = self.get_json(&discovery).await?;
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| TokenError::IssuerUnreachable(format!("{discovery}: no jwks_uri")))?
            .to_string();
        let jwks = self.get_json(&jwks_uri).await?;
        serde_json::from_value(jwks)
            .map_err(|e| TokenError::IssuerUnreachable(format!("{jwks_uri}: not a JWKS: {e}")))
    }

    /// GET `url` as JSON, at most [`MAX_DOCUMENT`] bytes.
    async fn get_json(&self, url: &str) -> Result<Value, TokenError> {
        let down = |m: String| TokenError::IssuerUnreachable(format!("{url}: {m}"));
        let http = self.http.as_ref().map_err(|e| down(e.clone()))?;
        let mut res = http
            .get(url)
            .send()
            .await
            .map_err(|e| down(e.to_string()))?;
        if !res.status().is_success() {
            return Err(down(format!("HTTP {}", res.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| down(e.to_string()))? {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(down(format!("larger than {MAX_DOCUMENT} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| down(format!("not JSON: {e}")))
    }
}

/// The key with `kid` (or the only key, when the token names none).
fn find(keys: &JwkSet, kid: Option<&str>) -> Option<DecodingKey> {
    let jwk = match kid {
        Some(kid) => keys.find(kid)?,
        None if keys.keys.len() == 1 => keys.keys.first()?,
        None => return None,
    };
    DecodingKey::from_jwk(jwk).ok()
}

/// `iss` from the payload before verification (only to pick which issuer's keys
/// verify it; nothing else is read unverified).
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}

/// Requests per minute allowed for one source address, and for one issuer.
pub(crate) const PER_SOURCE_PER_MINUTE: u32 = 20;
pub(crate) const PER_ISSUER_PER_MINUTE: u32 = 600;
/// Most keys a limiter tracks; when full of keys seen this minute, new keys wait.
const MAX_KEYS: usize = 10_000;

/// A fixed one-minute window counter per key (source address, issuer), bounded.
#[derive(Default)]
pub(crate) struct Limiter {
    counts: std::sync::Mutex<HashMap<String, (u64, u32)>>,
}

impl Limiter {
    /// Takes one request for `key` in minute `minute`; `false` over `limit`.
    pub(crate) fn allow(&self, key: &str, minute: u64, limit: u32) -> bool {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(key) && map.len() >= MAX_KEYS {
            map.retain(|_, (m, _)| *m == minute);
            if map.len() >= MAX_KEYS {
                return false;
            }
        }
        let entry = map.entry(key.to_string()).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= limit {
            return false;
        }
        entry.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_per_key_per_minute_and_stays_bounded() {
        let l = Limiter::default();
        assert!((0..3).all(|_| l.allow("a", 1, 3)));
        assert!(!l.allow("a", 1, 3));
        assert!(l.allow("b", 1, 3));
        assert!(l.allow("a", 2, 3));
        for i in 0..MAX_KEYS {
            l.allow(&format!("k{i}"), 5, 1);
        }
        assert!(!l.allow("new", 5, 1), "full of this minute's keys");
        assert!(l.allow("new", 6, 1), "a new minute frees the old keys");
    }

    #[test]
    fn unverified_issuer_reads_only_iss() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"iss":"https://ci.example","sub":"x"}"#);
        assert_eq!(
            unverified_issuer(&format!("e30.{payload}.sig")).as_deref(),
            Some("https://ci.example")
        );
        assert_eq!(unverified_issuer("garbage"), None);
    }
}
