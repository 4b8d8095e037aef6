//! GitHub as the identity provider (`idp_provider: github`): OAuth2 without OpenID
//! Connect, as Pomerium's `pkg/identity/oauth/github` uses it. The browser goes to
//! `<idp_provider_url>/login/oauth/authorize` (state, PKCE S256, scopes
//! `user:email read:org` by default); the code is redeemed at
//! `/login/oauth/access_token` (`Accept: application/json`; GitHub answers an
//! OAuth error with status 200 and an `error` field); the identity comes from the
//! REST API (`https://api.github.com`, or `<idp_provider_url>/api/v3` for GitHub
//! Enterprise Server): `GET /user` (subject = `node_id`, as Pomerium, else the
//! numeric id; `login`, `name`), `GET /user/emails` (the primary address, only when
//! GitHub verified it), `GET /user/orgs` and `GET /user/teams` (`groups`: each
//! organisation's login and each team as `org/team-slug`).
//!
//! A GitHub App with expiring user tokens returns a refresh token; [`GitHub::refresh`]
//! redeems it and re-reads the identity. An OAuth App's token does not expire and
//! comes without one, so such a session keeps the identity it signed in with
//! (groups included) until it ends.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tether_core::config::{Config, GithubEndpoints, IdpProvider};
use tether_core::identity::{email_is_verified, EmailVerified, EMAIL_VERIFIED_CLAIM};
use tether_core::{Identity, Secret};

use crate::error::WebError;
use crate::oidc::{LoginStart, RefreshError, SignedIn};

/// Most pages read from a paginated list (100 entries each).
const MAX_PAGES: usize = 10;

/// The GitHub OAuth client.
pub(crate) struct GitHub {
    http: Result<reqwest::Client, String>,
    endpoints: GithubEndpoints,
    client_id: String,
    client_secret: Option<Secret<String>>,
    redirect_uri: String,
    scopes: Vec<String>,
}

/// The token endpoint's answer (success or OAuth error, both with status 200).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    refresh_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct User {
    id: Option<u64>,
    node_id: Option<String>,
    login: String,
    name: Option<String>,
    avatar_url: Option<String>,
    html_url: Option<String>,
}

#[derive(Deserialize)]
struct Email {
    email: String,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    verified: bool,
}

#[derive(Deserialize)]
struct Org {
    login: String,
}

#[derive(Deserialize)]
struct Team {
    slug: String,
    organization: Org,
}

/// How a REST call failed.
enum ApiError {
    /// 401: the token is not (or no longer) valid.
    Unauthorized(String),
    /// Anything else: network, 5xx, an unexpected body.
    Other(String),
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    if getrandom::getrandom(&mut bytes).is_err() {
        // Without OS randomness no login may start; an empty token fails it.
        return String::new();
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The URL of the next page from a `Link` header, if any.
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

impl GitHub {
    /// Prepares the client (no I/O but reading `idp_client_secret_file`).
    pub(crate) fn new(config: &Config, client_secret: Option<Secret<String>>) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .pool_max_idle_per_host(0)
            .user_agent(concat!("tether/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string());
        Self {
            http,
            endpoints: IdpProvider::github_endpoints(&config.idp.provider_url),
            client_id: config.idp.client_id.clone(),
            client_secret,
            redirect_uri: config.redirect_uri(),
            scopes: config.idp.scopes.clone(),
        }
    }

    fn http(&self) -> Result<&reqwest::Client, String> {
        self.http
            .as_ref()
            .map_err(|e| format!("HTTP client unavailable: {e}"))
    }

    /// The authorization URL (state and PKCE S256; the nonce is unused: no ID token).
    pub(crate) fn start(&self) -> Result<LoginStart, WebError> {
        let state = random_token();
        let verifier = random_token();
        if state.is_empty() || verifier.is_empty() {
            return Err(WebError::Internal("no OS randomness".into()));
        }
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut url = url::Url::parse(&self.endpoints.authorize)
            .map_err(|e| WebError::Internal(format!("invalid idp_provider_url: {e}")))?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("response_type", "code")
            .append_pair("scope", &self.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(LoginStart {
            url: url.to_string(),
            state,
            nonce: random_token(),
            pkce_verifier: verifier,
        })
    }

    /// One token endpoint request with `params` (plus the client credentials).
    async fn token(&self, params: &[(&str, &str)]) -> Result<TokenResponse, String> {
        let mut form: Vec<(&str, &str)> = vec![("client_id", self.client_id.as_str())];
        if let Some(secret) = &self.client_secret {
            form.push(("client_secret", secret.expose().as_str()));
        }
        form.extend_from_slice(params);
        let res = self
            .http()?
            .post(&self.endpoints.token)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("token request failed: {e}"))?;
        let status = res.status();
        let body = res
            .bytes()
            .await
            .map_err(|e| format!("token response: {e}"))?;
        serde_json::from_slice(&body)
            .map_err(|e| format!("token endpoint answered {status} with no JSON token: {e}"))
    }

    /// Redeems the authorization code and reads the identity.
    pub(crate) async fn finish(
        &self,
        code: &str,
        pkce_verifier: &str,
    ) -> Result<SignedIn, WebError> {
        let t = self
            .token(&[
                ("code", code),
                ("redirect_uri", self.redirect_uri.as_str()),
                ("code_verifier", pkce_verifier),
            ])
            .await
            .map_err(WebError::IdpUnreachable)?;
        let Some(access) = t.access_token else {
            return Err(WebError::SignInFailed {
                msg: "The identity provider refused the sign-in; start again from the link.",
                detail: format!(
                    "github token endpoint: {} {}",
                    t.error.unwrap_or_default(),
                    t.error_description.unwrap_or_default()
                ),
            });
        };
        let identity = self.identity(&access).await.map_err(|e| match e {
            ApiError::Unauthorized(d) => WebError::SignInFailed {
                msg: "The identity provider refused the sign-in; start again from the link.",
                detail: format!("github API refused the new token: {d}"),
            },
            ApiError::Other(d) => WebError::IdpUnreachable(format!("github API: {d}")),
        })?;
        Ok(SignedIn {
            identity,
            refresh_token: t.refresh_token.map(Secret::new),
        })
    }

    /// Redeems a GitHub App refresh token for `subject`'s current identity.
    pub(crate) async fn refresh(
        &self,
        subject: &str,
        refresh_token: &Secret<String>,
    ) -> Result<SignedIn, RefreshError> {
        let t = self
            .token(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose().as_str()),
            ])
            .await
            .map_err(RefreshError::Unavailable)?;
        let Some(access) = t.access_token else {
            let error = t.error.unwrap_or_default();
            let text = format!("github token endpoint: {error}");
            return Err(match error.as_str() {
                "bad_refresh_token" | "invalid_grant" => RefreshError::Revoked(text),
                _ => RefreshError::Unavailable(text),
            });
        };
        let identity = self.identity(&access).await.map_err(|e| match e {
            ApiError::Unauthorized(d) => RefreshError::Revoked(format!("github API: {d}")),
            ApiError::Other(d) => RefreshError::Unavailable(format!("github API: {d}")),
        })?;
        if identity.subject != subject {
            return Err(RefreshError::Revoked(format!(
                "the refreshed identity is another subject ({:?})",
                identity.subject
            )));
        }
        Ok(SignedIn {
            identity,
            refresh_token: t.refresh_token.map(Secret::new),
        })
    }

    /// `GET {api}{path}` with the token; every page of a list (up to [`MAX_PAGES`]).
    async fn get(&self, token: &str, path: &str, list: bool) -> Result<Value, ApiError> {
        let http = self.http().map_err(ApiError::Other)?;
        let mut url = format!("{}{path}", self.endpoints.api);
        if list {
            url.push_str("?per_page=100");
        }
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let res = http
                .get(&url)
                .bearer_auth(token)
                .header(reqwest::header::ACCEPT, "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28")
                .send()
                .await
                .map_err(|e| ApiError::Other(format!("{path}: {e}")))?;
            let status = res.status();
            if status == reqwest::StatusCode::UNAUTHORIZED {
                return Err(ApiError::Unauthorized(format!("{path}: 401")));
            }
            if !status.is_success() {
                return Err(ApiError::Other(format!("{path}: answered {status}")));
            }
            let next = next_link(res.headers());
            let body = res
                .bytes()
                .await
                .map_err(|e| ApiError::Other(format!("{path}: {e}")))?;
            let value: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::Other(format!("{path}: not JSON: {e}")))?;
            if !list {
                return Ok(value);
            }
            match value {
                Value::Array(page) => items.extend(page),
                _ => return Err(ApiError::Other(format!("{path}: expected a list"))),
            }
            // The token goes only to the API it was meant for.
            match next {
                Some(n) if n.starts_with(&format!("{}/", self.endpoints.api)) => url = n,
                _ => break,
            }
        }
        Ok(Value::Array(items))
    }

    /// The identity behind an access token (module docs).
    async fn identity(&self, token: &str) -> Result<Identity, ApiError> {
        let user: User = serde_json::from_value(self.get(token, "/user", false).await?)
            .map_err(|e| ApiError::Other(format!("/user: {e}")))?;
        let emails: Vec<Email> =
            serde_json::from_value(self.get(token, "/user/emails", true).await?)
                .map_err(|e| ApiError::Other(format!("/user/emails: {e}")))?;
        let orgs: Vec<Org> = serde_json::from_value(self.get(token, "/user/orgs", true).await?)
            .map_err(|e| ApiError::Other(format!("/user/orgs: {e}")))?;
        let teams: Vec<Team> = serde_json::from_value(self.get(token, "/user/teams", true).await?)
            .map_err(|e| ApiError::Other(format!("/user/teams: {e}")))?;
        Ok(identity_from(user, &emails, &orgs, &teams))
    }
}

/// The identity GitHub's answers describe (pure; see the module docs).
fn identity_from(user: User, emails: &[Email], orgs: &[Org], teams: &[Team]) -> Identity {
    let subject = user
        .node_id
        .filter(|n| !n.is_empty())
        .or_else(|| user.id.map(|id| id.to_string()))
        .unwrap_or_else(|| user.login.clone());
    let primary = emails.iter().find(|e| e.primary && e.verified);
    let mut groups: Vec<String> = orgs.iter().map(|o| o.login.clone()).collect();
    groups.extend(
        teams
            .iter()
            .map(|t| format!("{}/{}", t.organization.login, t.slug)),
    );
    let mut claims = BTreeMap::new();
    claims.insert("preferred_username".into(), json!(user.login));
    claims.insert("user".into(), json!(user.login));
    if let Some(n) = &user.name {
        claims.insert("name".into(), json!(n));
    }
    if let Some(p) = &user.avatar_url {
        claims.insert("picture".into(), json!(p));
    }
    if let Some(p) = &user.html_url {
        claims.insert("profile".into(), json!(p));
    }
    claims.insert("groups".into(), json!(groups));
    if let Some(e) = primary {
        claims.insert("email".into(), json!(e.email));
        claims.insert(EMAIL_VERIFIED_CLAIM.into(), json!(true));
    }
    let verified = email_is_verified(
        EmailVerified::from_claim(claims.get(EMAIL_VERIFIED_CLAIM)),
        false,
    );
    Identity {
        subject,
        email: primary
            .filter(|_| verified)
            .map(|e| e.email.clone())
            .unwrap_or_default(),
        name: user.name,
        claims,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn identity_from_github_answers() {
        let user: User = serde_json::from_value(json!({
            "login": "octocat", "id": 583231, "node_id": "MDQ6VXNlcjU4MzIzMQ==",
            "name": "The Octocat", "avatar_url": "https://a/u/583231",
            "html_url": "https://github.com/octocat", "type": "User"
        }))
        .unwrap();
        let emails: Vec<Email> = serde_json::from_value(json!([
            {"email": "octo@old.example", "primary": false, "verified": true, "visibility": null},
            {"email": "octocat@github.example", "primary": true, "verified": true, "visibility": "public"}
        ]))
        .unwrap();
        let orgs: Vec<Org> =
            serde_json::from_value(json!([{"login": "octo-org", "id": 1}])).unwrap();
        let teams: Vec<Team> = serde_json::from_value(json!([
            {"slug": "sre", "name": "SRE", "organization": {"login": "octo-org", "id": 1}}
        ]))
        .unwrap();
        let id = identity_from(user, &emails, &orgs, &teams);
        assert_eq!(id.subject, "MDQ6VXNlcjU4MzIzMQ==");
        assert_eq!(id.email, "octocat@github.example");
        assert_eq!(id.name.as_deref(), Some("The Octocat"));
        assert_eq!(id.claim_values("groups"), ["octo-org", "octo-org/sre"]);
        assert_eq!(id.claim_values("preferred_username"), ["octocat"]);
        assert_eq!(id.verified_email(), Some("octocat@github.example"));
    }

    #[test]
    fn unverified_primary_email_is_not_trusted() {
        let user: User = serde_json::from_value(json!({"login": "mallory", "id": 7})).unwrap();
        let emails: Vec<Email> = serde_json::from_value(json!([
            {"email": "ceo@victim.example", "primary": true, "verified": false}
        ]))
        .unwrap();
        let id = identity_from(user, &emails, &[], &[]);
        assert_eq!(id.subject, "7");
        assert_eq!(id.email, "");
        assert!(id.verified_email().is_none());
        assert!(!id.claims.contains_key("email"));
    }

    #[test]
    fn link_header_next_page() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::LINK,
            "<https://api.github.com/user/teams?page=2>; rel=\"next\", <https://api.github.com/user/teams?page=5>; rel=\"last\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/user/teams?page=2")
        );
        h.insert(
            reqwest::header::LINK,
            "<https://x/?page=1>; rel=\"prev\"".parse().unwrap(),
        );
        assert_eq!(next_link(&h), None);
    }
}
