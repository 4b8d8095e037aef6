//! The development identity provider (demo only, SPEC §11): a real, minimal OpenID
//! Connect issuer served under `/dev-idp` by the same process, with static users
//! from the config. It speaks plain OIDC over HTTP — discovery, `/authorize` (a
//! login form), `/token` (client authentication, PKCE S256, single-use 60 s codes)
//! and `/jwks` (an RS256 key generated at start) — so tether's ordinary OIDC client
//! signs in against it exactly as against a production IdP. Every page it renders
//! says "development only". `serve` mounts it only with `dev_idp.enabled: true`
//! (logged as a warning at start); its password form is rate-limited per source
//! (`throttle`). Nothing else in the crate may depend on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::EncodingKey;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use sha2::{Digest, Sha256};
use tether_core::config::{Config, DevIdpUser};
use tether_core::Timestamp;

mod authorize;
mod throttle;
mod token;

/// Why the development IdP could not be created.
#[derive(Debug, thiserror::Error)]
pub enum DevIdpError {
    /// Generating the RSA signing key failed.
    #[error("RSA key generation failed: {0}")]
    KeyGeneration(String),
    /// The supplied private key could not be parsed or encoded.
    #[error("invalid RSA private key: {0}")]
    InvalidKey(String),
    /// The issuer is not an absolute http(s) URL.
    #[error("invalid dev IdP issuer URL: {0}")]
    InvalidIssuer(String),
}

/// A code handed to the client by `/authorize`, redeemable once at `/token`.
struct IssuedCode {
    username: String,
    client_id: String,
    redirect_uri: String,
    nonce: String,
    code_challenge: String,
    expires: Timestamp,
}

struct Inner {
    users: Vec<DevIdpUser>,
    issuer: String,
    key: EncodingKey,
    kid: String,
    jwk: serde_json::Value,
    codes: Mutex<HashMap<String, IssuedCode>>,
    /// Password attempts per source.
    throttle: throttle::Throttle,
}

/// The development OIDC issuer. Cheap to clone.
#[derive(Clone)]
pub struct DevIdp {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DevIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIdp")
            .field("issuer", &self.inner.issuer)
            .field("users", &self.inner.users.len())
            .field("kid", &self.inner.kid)
            .finish_non_exhaustive()
    }
}

impl DevIdp {
    /// Creates the issuer with a freshly generated RSA-2048 signing key. `issuer` is
    /// `<authenticate_service_url>/dev-idp`.
    pub fn new(users: Vec<DevIdpUser>, issuer: String) -> Result<DevIdp, DevIdpError> {
        let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
            .map_err(|e| DevIdpError::KeyGeneration(e.to_string()))?;
        Self::with_key(users, issuer, key)
    }

    /// Creates the issuer with a given RSA private key (PKCS#8 or PKCS#1 PEM), e.g.
    /// one persisted in the data directory so tokens survive restarts.
    pub fn from_private_key_pem(
        users: Vec<DevIdpUser>,
        issuer: String,
        pem: &str,
    ) -> Result<DevIdp, DevIdpError> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|e| DevIdpError::InvalidKey(e.to_string()))?;
        Self::with_key(users, issuer, key)
    }

    fn with_key(
        users: Vec<DevIdpUser>,
        issuer: String,
        key: RsaPrivateKey,
    ) -> Result<DevIdp, DevIdpError> {
        let issuer = issuer.trim_end_matches('/').to_string();
        match url::Url::parse(&issuer) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => return Err(DevIdpError::InvalidIssuer(issuer)),
        }
        let der = key
            .to_pkcs1_der()
            .map_err(|e| DevIdpError::InvalidKey(e.to_string()))?;
        let n = key.n().to_bytes_be();
        let e = key.e().to_bytes_be();
        let kid: String = URL_SAFE_NO_PAD
            .encode(Sha256::digest(&n))
            .chars()
            .take(16)
            .collect();
        let jwk = serde_json::json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(&n),
            "e": URL_SAFE_NO_PAD.encode(&e),
        });
        Ok(DevIdp {
            inner: Arc::new(Inner {
                users,
                issuer,
                key: EncodingKey::from_rsa_der(der.as_bytes()),
                kid,
                jwk,
                codes: Mutex::new(HashMap::new()),
                throttle: throttle::Throttle::default(),
            }),
        })
    }

    /// The issuer URL (`iss`).
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    fn user(&self, username: &str, password: &str) -> Option<&DevIdpUser> {
        self.inner
            .users
            .iter()
            .find(|u| u.username == username && same(u.password.expose(), password))
    }
}

/// Equality without an early exit on the first differing byte.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// State of the dev IdP's handlers.
#[derive(Clone)]
struct DevState {
    idp: DevIdp,
    config: Arc<Config>,
}

/// The dev IdP's routes, to be nested under `/dev-idp`.
pub(crate) fn routes(idp: DevIdp, config: Arc<Config>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize::form).post(authorize::submit))
        .route("/token", axum::routing::post(token::token))
        .with_state(DevState { idp, config })
}

async fn discovery(State(s): State<DevState>) -> Json<serde_json::Value> {
    let iss = s.idp.issuer();
    Json(serde_json::json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "jwks_uri": format!("{iss}/jwks"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "groups"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "email", "name", "groups"],
    }))
}

async fn jwks(State(s): State<DevState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "keys": [s.idp.inner.jwk.clone()] }))
}
