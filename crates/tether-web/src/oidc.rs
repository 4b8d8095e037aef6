//! The OpenID Connect relying party, built on the `openidconnect` crate: lazy
//! discovery (retried per request until it succeeds, so tether starts while the IdP
//! is down), the authorization-code request with PKCE S256, `state` and `nonce`, the
//! code exchange (client_secret_basic) and ID token verification — signature via
//! JWKS, `iss`, `aud`, `exp` and `nonce` — with one JWKS refresh when the token names
//! a key we do not know yet (key rotation). Produces an [`Identity`] whose `email`
//! is set only when the IdP verified it (`email_verified`, see
//! [`tether_core::identity`]), and the refresh token when the IdP issued one;
//! [`Oidc::refresh`] redeems that token (`refresh_token` grant) for the person's
//! current claims — from the new ID token, or from the userinfo endpoint when the
//! IdP sends none. Knows nothing about cookies, the store or pages.
//!
//! The provider named by `idp_provider` shapes it (`tether_core::config::IdpProvider`):
//! the issuer derived from `idp_provider_url`, extra authorization parameters
//! (Google's `access_type=offline`), the claim mapping into `groups` and
//! `email_verified`, and Entra ID's multi-tenant endpoints, whose discovery
//! document names the issuer `https://login.microsoftonline.com/{tenantid}/v2.0`:
//! each ID token's `iss` must then be that with the token's own `tid`. GitHub
//! (OAuth2 without OIDC) is delegated to [`crate::idp::github`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::{
    CoreClient, CoreErrorResponseType, CoreIdToken, CoreIdTokenClaims, CoreProviderMetadata,
    CoreResponseType,
};
use openidconnect::reqwest;
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret,
    CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, JsonWebKeySet, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    RequestTokenError, Scope, SignatureVerificationError, TokenResponse,
};
use tether_core::config::{Config, IdpProvider};
use tether_core::identity::{email_is_verified, EmailVerified, EMAIL_VERIFIED_CLAIM};
use tether_core::{Identity, Secret};
use tokio::sync::Mutex;

use crate::error::WebError;
use crate::idp::github::GitHub;

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
    /// The discovered issuer when it is Entra's multi-tenant placeholder (the
    /// metadata then carries the configured issuer instead).
    placeholder: Option<String>,
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

/// A finished sign-in: who, and the refresh token if the IdP issued one.
pub(crate) struct SignedIn {
    /// The verified identity.
    pub(crate) identity: Identity,
    /// The refresh token (`offline_access`), if any.
    pub(crate) refresh_token: Option<Secret<String>>,
}

/// Why a refresh did not produce an identity.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RefreshError {
    /// The IdP refused the refresh token (`invalid_grant`: revoked, expired, the
    /// user disabled), or answered for another subject: the session is over.
    #[error("the identity provider ended the session: {0}")]
    Revoked(String),
    /// The IdP could not be asked or gave no usable answer (network, 5xx,
    /// malformed response, another OAuth error): try again later.
    #[error("identity refresh failed: {0}")]
    Unavailable(String),
}

/// The relying party.
pub(crate) struct Oidc {
    http: Result<reqwest::Client, String>,
    /// `idp_provider`.
    kind: IdpProvider,
    /// GitHub's OAuth client, when `idp_provider: github` (everything delegates).
    github: Option<GitHub>,
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
        let kind = config.idp.kind();
        Self {
            http,
            kind,
            github: (kind == IdpProvider::Github)
                .then(|| GitHub::new(config, client_secret.clone())),
            issuer: config.idp.issuer(),
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
        let (metadata, placeholder) = if self.kind == IdpProvider::Azure {
            self.discover_azure().await?
        } else {
            let m = CoreProviderMetadata::discover_async(issuer, self.http()?)
                .await
                .map_err(|e| {
                    WebError::IdpUnreachable(format!("discovery failed: {}", chain(&e)))
                })?;
            (m, None)
        };
        tracing::info!(issuer = %self.issuer, provider = self.kind.name(), "OIDC provider discovered");
        *cache = Some(Cached {
            metadata: metadata.clone(),
            placeholder,
            jwks_refreshed: None,
        });
        Ok(metadata)
    }

    /// Entra ID discovery: as `discover_async`, except that a multi-tenant endpoint's
    /// placeholder issuer (`{tenantid}`) is accepted and remembered, the metadata
    /// then naming the configured issuer (as Pomerium does).
    async fn discover_azure(&self) -> Result<(CoreProviderMetadata, Option<String>), WebError> {
        let unreachable =
            |what: &str| WebError::IdpUnreachable(format!("discovery failed: {what}"));
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let res = self
            .http()?
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unreachable(&chain(&e)))?;
        if !res.status().is_success() {
            return Err(unreachable(&format!("{url} answered {}", res.status())));
        }
        let body = res.bytes().await.map_err(|e| unreachable(&chain(&e)))?;
        let mut doc: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&body).map_err(|e| unreachable(&format!("{url}: {e}")))?;
        let discovered = doc
            .get("issuer")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        if !self.kind.discovered_issuer_ok(&self.issuer, &discovered) {
            return Err(unreachable(&format!(
                "the issuer is {discovered:?}, expected {:?}",
                self.issuer
            )));
        }
        let placeholder = (discovered != self.issuer).then_some(discovered);
        doc.insert("issuer".into(), self.issuer.clone().into());
        let metadata: CoreProviderMetadata =
            serde_json::from_value(doc.into()).map_err(|e| unreachable(&format!("{url}: {e}")))?;
        let jwks = JsonWebKeySet::fetch_async(metadata.jwks_uri(), self.http()?)
            .await
            .map_err(|e| unreachable(&format!("JWKS: {}", chain(&e))))?;
        Ok((metadata.set_jwks(jwks), placeholder))
    }

    /// The multi-tenant placeholder issuer, if discovery found one.
    async fn placeholder(&self) -> Option<String> {
        self.cache
            .lock()
            .await
            .as_ref()
            .and_then(|c| c.placeholder.clone())
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
        if let Some(github) = &self.github {
            return github.start();
        }
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
        for (k, v) in self.kind.auth_params() {
            req = req.add_extra_param(*k, *v);
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
    ) -> Result<SignedIn, WebError> {
        if let Some(github) = &self.github {
            return github.finish(code, pkce_verifier).await;
        }
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
        let id_token = response
            .id_token()
            .ok_or_else(|| WebError::IdpUnreachable("token response has no id_token".into()))?;
        let nonce = Nonce::new(nonce.to_string());
        let placeholder = self.placeholder().await;
        let placeholder = placeholder.as_deref();
        let claims = match verify(&client, id_token, &nonce, placeholder) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => match self.refresh_jwks().await? {
                Some(metadata) => verify(&self.client(metadata)?, id_token, &nonce, placeholder),
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
        let raw = id_token.to_string();
        self.check_tenant_issuer(placeholder, &claims, &raw)
            .map_err(|detail| WebError::SignInFailed {
                msg: "The identity token could not be verified.",
                detail,
            })?;
        Ok(SignedIn {
            identity: identity(&claims, &raw, self.assume_email_verified, self.kind),
            refresh_token: response
                .refresh_token()
                .map(|t| Secret::new(t.secret().clone())),
        })
    }

    /// Redeems `refresh_token` for `subject`'s current identity: the refreshed ID
    /// token (signature, `iss`, `aud`, `exp` verified; no nonce on a refresh) or,
    /// without one, the userinfo endpoint with the new access token. Returns the
    /// identity and the rotated refresh token, if the IdP sent one.
    pub(crate) async fn refresh(
        &self,
        subject: &str,
        refresh_token: &Secret<String>,
    ) -> Result<SignedIn, RefreshError> {
        if let Some(github) = &self.github {
            return github.refresh(subject, refresh_token).await;
        }
        let unavailable = |e: WebError| RefreshError::Unavailable(e.to_string());
        let metadata = self.metadata().await.map_err(unavailable)?;
        let client = self.client(metadata.clone()).map_err(unavailable)?;
        let token = RefreshToken::new(refresh_token.expose().clone());
        let response = client
            .exchange_refresh_token(&token)
            .map_err(|e| RefreshError::Unavailable(format!("no token endpoint: {e}")))?
            .request_async(self.http().map_err(unavailable)?)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r)
                    if *r.error() == CoreErrorResponseType::InvalidGrant =>
                {
                    RefreshError::Revoked(format!("token endpoint: {r}"))
                }
                RequestTokenError::ServerResponse(r) => {
                    RefreshError::Unavailable(format!("token endpoint refused the refresh: {r}"))
                }
                other => {
                    RefreshError::Unavailable(format!("token request failed: {}", chain(&other)))
                }
            })?;
        let identity = match response.id_token() {
            Some(id_token) => {
                let no_nonce = |_: Option<&Nonce>| Ok(());
                let placeholder = self.placeholder().await;
                let placeholder = placeholder.as_deref();
                let claims = match id_token.claims(&verifier(&client, placeholder), no_nonce) {
                    Err(ClaimsVerificationError::SignatureVerification(
                        SignatureVerificationError::NoMatchingKey,
                    )) => match self.refresh_jwks().await.map_err(unavailable)? {
                        Some(metadata) => id_token
                            .claims(
                                &verifier(
                                    &self.client(metadata).map_err(unavailable)?,
                                    placeholder,
                                ),
                                no_nonce,
                            )
                            .cloned(),
                        None => Err(ClaimsVerificationError::SignatureVerification(
                            SignatureVerificationError::NoMatchingKey,
                        )),
                    },
                    other => other.cloned(),
                }
                .map_err(|e| {
                    RefreshError::Unavailable(format!("refreshed ID token rejected: {}", chain(&e)))
                })?;
                let raw = id_token.to_string();
                self.check_tenant_issuer(placeholder, &claims, &raw)
                    .map_err(RefreshError::Unavailable)?;
                identity(&claims, &raw, self.assume_email_verified, self.kind)
            }
            None => {
                self.userinfo(&metadata, response.access_token().secret())
                    .await?
            }
        };
        if identity.subject != subject {
            return Err(RefreshError::Revoked(format!(
                "the refreshed identity is another subject ({:?})",
                identity.subject
            )));
        }
        Ok(SignedIn {
            identity,
            refresh_token: response
                .refresh_token()
                .map(|t| Secret::new(t.secret().clone())),
        })
    }

    /// With Entra's placeholder issuer, the token's `iss` must name its own `tid`.
    fn check_tenant_issuer(
        &self,
        placeholder: Option<&str>,
        claims: &CoreIdTokenClaims,
        raw: &str,
    ) -> Result<(), String> {
        let Some(placeholder) = placeholder else {
            return Ok(());
        };
        let payload = payload(raw);
        let iss = claims.issuer().as_str();
        match self.kind.token_issuer_ok(placeholder, &payload, iss) {
            Some(false) => Err(format!(
                "ID token issuer {iss:?} is not the tenant's ({placeholder} with its tid)"
            )),
            _ => Ok(()),
        }
    }

    /// The userinfo endpoint's claims for `access_token`, as an identity.
    async fn userinfo(
        &self,
        metadata: &CoreProviderMetadata,
        access_token: &str,
    ) -> Result<Identity, RefreshError> {
        let url = metadata.userinfo_endpoint().ok_or_else(|| {
            RefreshError::Unavailable("no ID token on refresh and no userinfo endpoint".into())
        })?;
        let http = self
            .http()
            .map_err(|e| RefreshError::Unavailable(e.to_string()))?;
        let res = http
            .get(url.url().as_str())
            .bearer_auth(access_token)
            .send()
            .await
            .map_err(|e| RefreshError::Unavailable(format!("userinfo: {}", chain(&e))))?;
        let status = res.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(RefreshError::Revoked(
                "userinfo refused the access token".into(),
            ));
        }
        if !status.is_success() {
            return Err(RefreshError::Unavailable(format!(
                "userinfo answered {status}"
            )));
        }
        let body = res
            .bytes()
            .await
            .map_err(|e| RefreshError::Unavailable(format!("userinfo: {}", chain(&e))))?;
        let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&body)
            .map_err(|e| RefreshError::Unavailable(format!("userinfo is not JSON: {e}")))?;
        identity_from_map(
            claims.into_iter().collect(),
            self.assume_email_verified,
            self.kind,
        )
        .ok_or_else(|| RefreshError::Unavailable("userinfo has no sub".into()))
    }
}

/// An identity from a plain claims object (userinfo), with the same email rule as
/// [`identity`]; `None` without a `sub`.
fn identity_from_map(
    mut claims: BTreeMap<String, serde_json::Value>,
    assume: bool,
    kind: IdpProvider,
) -> Option<Identity> {
    let subject = claims.get("sub")?.as_str()?.to_string();
    claims.retain(|k, _| !REGISTERED_CLAIMS.contains(&k.as_str()));
    kind.normalize_claims(&mut claims);
    let verified = email_is_verified(
        EmailVerified::from_claim(claims.get(EMAIL_VERIFIED_CLAIM)),
        assume,
    );
    let email = claims
        .get("email")
        .and_then(|e| e.as_str())
        .unwrap_or_default()
        .to_string();
    let name = claims
        .get("name")
        .and_then(|n| n.as_str())
        .map(str::to_string);
    Some(Identity {
        subject,
        email: if verified { email } else { String::new() },
        name,
        claims,
    })
}

/// The ID token verifier: `iss` must equal the issuer, except with Entra's
/// multi-tenant placeholder, where [`Oidc::check_tenant_issuer`] checks it.
fn verifier<'a>(
    client: &'a Client,
    placeholder: Option<&str>,
) -> openidconnect::core::CoreIdTokenVerifier<'a> {
    client
        .id_token_verifier()
        .require_issuer_match(placeholder.is_none())
}

fn verify(
    client: &Client,
    id_token: &CoreIdToken,
    nonce: &Nonce,
    placeholder: Option<&str>,
) -> Result<CoreIdTokenClaims, ClaimsVerificationError> {
    id_token
        .claims(&verifier(client, placeholder), nonce)
        .cloned()
}

/// A token's payload claims (its signature already verified by the caller).
fn payload(raw_token: &str) -> BTreeMap<String, serde_json::Value> {
    raw_token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&b).ok())
        .map(|m| m.into_iter().collect())
        .unwrap_or_default()
}

/// The identity from verified claims; other claims come from the (already
/// verified) token payload so non-standard ones such as `groups` are kept. The
/// email is kept only when verified (`assume` = `assume_email_verified`); an
/// unverified address stays in the claims, where policies do not trust it.
fn identity(
    claims: &CoreIdTokenClaims,
    raw_token: &str,
    assume: bool,
    kind: IdpProvider,
) -> Identity {
    let mut extra = payload(raw_token);
    extra.retain(|k, _| !REGISTERED_CLAIMS.contains(&k.as_str()));
    kind.normalize_claims(&mut extra);
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
