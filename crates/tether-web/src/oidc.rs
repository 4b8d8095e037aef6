//! The OpenID Connect relying party, built on the `openidconnect` crate: lazy
//! discovery (retried per request until it succeeds, so tether starts while the IdP
//! is down), the authorization-code request with PKCE S256, `state` and `nonce`, the
//! code exchange (client_secret_basic) and ID token verification — signature via
//! JWKS, `iss`, `aud`, `exp` and `nonce` — with one JWKS refresh when the token names
//! a key we do not know yet (key rotation). Produces an [`Identity`] whose `email`
//! is set only when the IdP verified it (`email_verified`, see
//! [`tether_core::identity`]); knows nothing about cookies, the store or pages.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::{
    CoreClient, CoreIdToken, CoreIdTokenClaims, CoreProviderMetadata, CoreResponseType,
};
use openidconnect::reqwest;
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret,
    CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, JsonWebKeySet, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    SignatureVerificationError,
};
use tether_core::config::Config;
use tether_core::identity::{email_is_verified, EmailVerified, EMAIL_VERIFIED_CLAIM};
use tether_core::{Identity, Secret};
use tokio::sync::Mutex;

use crate::error::WebError;

/// Claims that describe the token rather than the person; not kept on the identity.
const REGISTERED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "nonce",
    "auth_time",
    "at_hash",
    "c_hash",
    "azp",
    "acr",
    "amr",
    "sid",
];

/// Least time between two JWKS refreshes triggered by unknown key ids.
const JWKS_REFRESH_MIN: Duration = Duration::from_secs(10);

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Discovery result kept after the first success.
struct Cached {
    metadata: CoreProviderMetadata,
    /// Last refresh triggered by an unknown key id (`None`: none yet).
    jwks_refreshed: Option<Instant>,
}

/// A started login: where to send the browser and what to remember meanwhile.
pub(crate) struct LoginStart {
    /// The IdP authorization URL.
    pub(crate) url: String,
    /// OAuth `state`.
    pub(crate) state: String,
    /// OIDC `nonce`.
    pub(crate) nonce: String,
    /// PKCE verifier.
    pub(crate) pkce_verifier: String,
}

/// The relying party.
pub(crate) struct Oidc {
    http: Result<reqwest::Client, String>,
    issuer: String,
    client_id: String,
    client_secret: Option<Secret<String>>,
    redirect_uri: String,
    scopes: Vec<String>,
    /// `assume_email_verified`: no `email_verified` claim counts as verified.
    assume_email_verified: bool,
    cache: Mutex<Option<Cached>>,
}

/// An error with its whole source chain, for logs.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Oidc {
    /// Prepares the relying party; performs no I/O except reading
    /// `idp_client_secret_file` when no inline secret is configured.
    pub(crate) fn new(config: &Config) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            // No idle connections kept: IdP calls are rare (a sign-in, a key
            // rotation), and a pooled connection the IdP has closed in the
            // meantime (Node's default keep-alive is 5 s) fails the token
            // POST with "connection reset", which cannot be retried safely.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| chain(&e));
        let client_secret = match (&config.idp.client_secret, &config.idp.client_secret_file) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(s) => Some(Secret::new(s.trim_end_matches(['\r', '\n']).to_string())),
                Err(e) => {
                    tracing::error!(path = %path, error = %e, "cannot read idp_client_secret_file");
                    None
                }
            },
            (None, None) => None,
        };
        Self {
            http,
            issuer: config.idp.provider_url.clone(),
            client_id: config.idp.client_id.clone(),
            client_secret,
            redirect_uri: config.redirect_uri(),
            scopes: config.idp.scopes.clone(),
            assume_email_verified: config.assume_email_verified,
            cache: Mutex::new(None),
        }
    }

    fn http(&self) -> Result<&reqwest::Client, WebError> {
        self.http
            .as_ref()
            .map_err(|e| WebError::Internal(format!("HTTP client unavailable: {e}")))
    }

    /// The provider metadata (with JWKS), discovering it if not cached yet.
    async fn metadata(&self) -> Result<CoreProviderMetadata, WebError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref() {
            return Ok(c.metadata.clone());
        }
        let issuer = IssuerUrl::new(self.issuer.clone())
            .map_err(|e| WebError::Internal(format!("invalid idp_provider_url: {e}")))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, self.http()?)
            .await
            .map_err(|e| WebError::IdpUnreachable(format!("discovery failed: {}", chain(&e))))?;
        tracing::info!(issuer = %self.issuer, "OIDC provider discovered");
        *cache = Some(Cached {
            metadata: metadata.clone(),
            jwks_refreshed: None,
        });
        Ok(metadata)
    }

    /// Re-fetches the JWKS (rate-limited); `None` if refreshed too recently.
    async fn refresh_jwks(&self) -> Result<Option<CoreProviderMetadata>, WebError> {
        let mut cache = self.cache.lock().await;
        let Some(cached) = cache.as_mut() else {
            return Ok(None);
        };
        if cached
            .jwks_refreshed
            .is_some_and(|t| t.elapsed() < JWKS_REFRESH_MIN)
        {
            return Ok(None);
        }
        let jwks = JsonWebKeySet::fetch_async(cached.metadata.jwks_uri(), self.http()?)
            .await
            .map_err(|e| WebError::IdpUnreachable(format!("JWKS fetch failed: {}", chain(&e))))?;
        tracing::info!(issuer = %self.issuer, "OIDC JWKS refreshed (unknown key id)");
        cached.metadata = cached.metadata.clone().set_jwks(jwks);
        cached.jwks_refreshed = Some(Instant::now());
        Ok(Some(cached.metadata.clone()))
    }

    fn client(&self, metadata: CoreProviderMetadata) -> Result<Client, WebError> {
        let redirect = RedirectUrl::new(self.redirect_uri.clone())
            .map_err(|e| WebError::Internal(format!("invalid redirect URI: {e}")))?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.client_id.clone()),
            self.client_secret
                .as_ref()
                .map(|s| ClientSecret::new(s.expose().clone())),
        )
        .set_redirect_uri(redirect))
    }

    /// Starts an authorization-code login (PKCE S256, state, nonce).
    pub(crate) async fn start(&self) -> Result<LoginStart, WebError> {
        let client = self.client(self.metadata().await?)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client.authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for s in self.scopes.iter().filter(|s| s.as_str() != "openid") {
            req = req.add_scope(Scope::new(s.clone()));
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        Ok(LoginStart {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges the authorization code and verifies the ID token.
    pub(crate) async fn finish(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<Identity, WebError> {
        let client = self.client(self.metadata().await?)?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| WebError::IdpUnreachable(format!("no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
            .request_async(self.http()?)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => WebError::SignInFailed {
                    msg: "The identity provider refused the sign-in; start again from the link.",
                    detail: format!("token endpoint refused the code: {r}"),
                },
                other => {
                    WebError::IdpUnreachable(format!("token request failed: {}", chain(&other)))
                }
            })?;
        use openidconnect::TokenResponse as _;
        let id_token = response
            .id_token()
            .ok_or_else(|| WebError::IdpUnreachable("token response has no id_token".into()))?;
        let nonce = Nonce::new(nonce.to_string());
        let claims = match verify(&client, id_token, &nonce) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => match self.refresh_jwks().await? {
                Some(metadata) => verify(&self.client(metadata)?, id_token, &nonce),
                None => Err(ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::NoMatchingKey,
                )),
            },
            other => other,
        }
        .map_err(|e| WebError::SignInFailed {
            msg: "The identity token could not be verified.",
            detail: format!("ID token rejected: {}", chain(&e)),
        })?;
        Ok(identity(
            &claims,
            &id_token.to_string(),
            self.assume_email_verified,
        ))
    }
}

fn verify(
    client: &Client,
    id_token: &CoreIdToken,
    nonce: &Nonce,
) -> Result<CoreIdTokenClaims, ClaimsVerificationError> {
    id_token.claims(&client.id_token_verifier(), nonce).cloned()
}

/// The identity from verified claims; other claims come from the (already
/// verified) token payload so non-standard ones such as `groups` are kept. The
/// email is kept only when verified (`assume` = `assume_email_verified`); an
/// unverified address stays in the claims, where policies do not trust it.
fn identity(claims: &CoreIdTokenClaims, raw_token: &str, assume: bool) -> Identity {
    let mut extra: BTreeMap<String, serde_json::Value> = raw_token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&b).ok())
        .map(|m| m.into_iter().collect())
        .unwrap_or_default();
    extra.retain(|k, _| !REGISTERED_CLAIMS.contains(&k.as_str()));
    let verified = email_is_verified(
        EmailVerified::from_claim(extra.get(EMAIL_VERIFIED_CLAIM)),
        assume,
    );
    let email = claims.email().map(|e| e.to_string()).unwrap_or_default();
    if !verified && !email.is_empty() {
        tracing::info!(
            subject = %claims.subject().as_str(),
            "the IdP did not verify this user's email: email-based policy criteria will not match"
        );
    }
    Identity {
        subject: claims.subject().to_string(),
        email: if verified { email } else { String::new() },
        name: claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.to_string()),
        claims: extra,
    }
}
