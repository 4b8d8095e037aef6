//! The identity providers Pomerium names (`idp_provider`), and what each one means
//! for tether: its issuer (or, for github, OAuth endpoints) derived from
//! `idp_provider_url` the way Pomerium derives it (`pkg/identity/oidc/<provider>`,
//! `pkg/identity/oauth/github`), its default scopes, extra authorization
//! parameters, and where its groups and verified email come from
//! ([`IdpProvider::normalize_claims`]). Pure: no I/O; tether-web's OIDC and GitHub
//! clients use these facts.

use std::collections::BTreeMap;

use serde_json::Value;

/// `idp_provider`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdpProvider {
    /// Any standards-compliant OpenID Connect provider (Keycloak, Dex, Authentik…).
    Oidc,
    /// Google (Workspace): fixed issuer `https://accounts.google.com`.
    Google,
    /// Okta: the org or custom authorization server URL.
    Okta,
    /// Microsoft Entra ID (Azure AD) v2.0 endpoint.
    Azure,
    /// Auth0: the tenant URL (its issuer ends with `/`).
    Auth0,
    /// Amazon Cognito user pool (`https://cognito-idp.REGION.amazonaws.com/POOL_ID`).
    Cognito,
    /// GitLab (gitlab.com or self-managed).
    Gitlab,
    /// OneLogin (v1 `/oidc` or v2 `/oidc/2`).
    OneLogin,
    /// Ping Identity (PingOne / PingFederate).
    Ping,
    /// GitHub: OAuth2 without OIDC; identity and groups from its REST API.
    Github,
}

/// The names `idp_provider` accepts, in documentation order.
pub const IDP_PROVIDERS: &[(&str, IdpProvider)] = &[
    ("oidc", IdpProvider::Oidc),
    ("google", IdpProvider::Google),
    ("okta", IdpProvider::Okta),
    ("azure", IdpProvider::Azure),
    ("auth0", IdpProvider::Auth0),
    ("cognito", IdpProvider::Cognito),
    ("gitlab", IdpProvider::Gitlab),
    ("onelogin", IdpProvider::OneLogin),
    ("ping", IdpProvider::Ping),
    ("github", IdpProvider::Github),
];

/// Entra ID's multi-tenant endpoint, Pomerium's default for `azure`.
pub const AZURE_COMMON: &str = "https://login.microsoftonline.com/common/v2.0";

/// The issuer placeholder in a multi-tenant Entra discovery document.
pub const AZURE_TENANT_PLACEHOLDER: &str = "{tenantid}";

/// github.com, Pomerium's default for `github`.
pub const GITHUB_COM: &str = "https://github.com";

/// The REST API of github.com.
pub const GITHUB_API: &str = "https://api.github.com";

/// Where GitHub's OAuth and REST endpoints are, derived from `idp_provider_url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GithubEndpoints {
    /// `<url>/login/oauth/authorize`.
    pub authorize: String,
    /// `<url>/login/oauth/access_token`.
    pub token: String,
    /// REST API base: `https://api.github.com` for github.com, else
    /// `<url>/api/v3` (GitHub Enterprise Server).
    pub api: String,
}

impl IdpProvider {
    /// The provider named `name` (`idp_provider`'s spelling).
    pub fn from_name(name: &str) -> Option<IdpProvider> {
        IDP_PROVIDERS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
    }

    /// The config spelling.
    pub fn name(self) -> &'static str {
        IDP_PROVIDERS
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("oidc", |(n, _)| n)
    }

    /// `idp_provider_url` when it is not set (Pomerium's defaults); `None`: required.
    pub fn default_url(self) -> Option<&'static str> {
        match self {
            IdpProvider::Google => Some("https://accounts.google.com"),
            IdpProvider::Azure => Some(AZURE_COMMON),
            IdpProvider::Gitlab => Some("https://gitlab.com"),
            IdpProvider::OneLogin => Some("https://openid-connect.onelogin.com/oidc"),
            IdpProvider::Github => Some(GITHUB_COM),
            IdpProvider::Oidc
            | IdpProvider::Okta
            | IdpProvider::Auth0
            | IdpProvider::Cognito
            | IdpProvider::Ping => None,
        }
    }

    /// Whether the provider speaks OpenID Connect (all but github).
    pub fn is_oidc(self) -> bool {
        self != IdpProvider::Github
    }

    /// The scopes asked for when `idp_scopes` is not set, as Pomerium asks them:
    /// `offline_access` (a refresh token) where the provider issues one that way;
    /// Google uses `access_type=offline` instead ([`Self::auth_params`]); OneLogin
    /// asks `groups` (v2, `/oidc/2`, has no `offline_access`); GitHub asks
    /// `user:email read:org` (the email list, and organisations and teams).
    pub fn default_scopes(self, url: &str) -> Vec<String> {
        let list: &[&str] = match self {
            IdpProvider::Google | IdpProvider::Gitlab | IdpProvider::Cognito => {
                &["openid", "profile", "email"]
            }
            IdpProvider::OneLogin if url.contains("/oidc/2") => {
                &["openid", "profile", "email", "groups"]
            }
            IdpProvider::OneLogin => &["openid", "profile", "email", "groups", "offline_access"],
            IdpProvider::Github => &["user:email", "read:org"],
            IdpProvider::Oidc
            | IdpProvider::Okta
            | IdpProvider::Azure
            | IdpProvider::Auth0
            | IdpProvider::Ping => &["openid", "profile", "email", "offline_access"],
        };
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Extra authorization request parameters (Pomerium's defaults): Google's
    /// `access_type=offline` (its refresh token) with `prompt=select_account
    /// consent`, Entra's `prompt=select_account`.
    pub fn auth_params(self) -> &'static [(&'static str, &'static str)] {
        match self {
            IdpProvider::Google => &[
                ("access_type", "offline"),
                ("prompt", "select_account consent"),
            ],
            IdpProvider::Azure => &[("prompt", "select_account")],
            _ => &[],
        }
    }

    /// The issuer whose discovery document is read, from the configured URL (no
    /// trailing slash): Auth0's issuer keeps its trailing `/` (Pomerium adds it);
    /// the others are the URL as given.
    pub fn issuer(self, url: &str) -> String {
        match self {
            IdpProvider::Auth0 => format!("{}/", url.trim_end_matches('/')),
            _ => url.trim_end_matches('/').to_string(),
        }
    }

    /// GitHub's endpoints under `url` (github.com or a GitHub Enterprise Server).
    pub fn github_endpoints(url: &str) -> GithubEndpoints {
        let base = url.trim_end_matches('/');
        let api = if base == GITHUB_COM || base == "https://www.github.com" {
            GITHUB_API.to_string()
        } else {
            format!("{base}/api/v3")
        };
        GithubEndpoints {
            authorize: format!("{base}/login/oauth/authorize"),
            token: format!("{base}/login/oauth/access_token"),
            api,
        }
    }

    /// Whether the discovered `issuer` is acceptable for the configured one. Equal,
    /// always; for azure, Entra's multi-tenant endpoints (`common`,
    /// `organizations`, `consumers`) publish the placeholder issuer
    /// `https://login.microsoftonline.com/{tenantid}/v2.0`: ID tokens are then
    /// checked against it with their own `tid` ([`Self::token_issuer_ok`]).
    pub fn discovered_issuer_ok(self, configured: &str, discovered: &str) -> bool {
        let multi_tenant = ["/common/v2.0", "/organizations/v2.0", "/consumers/v2.0"]
            .iter()
            .any(|end| configured.trim_end_matches('/').ends_with(end));
        configured == discovered
            || (self == IdpProvider::Azure
                && multi_tenant
                && discovered.contains(AZURE_TENANT_PLACEHOLDER))
    }

    /// For a placeholder issuer (Entra multi-tenant): whether the token's `iss`
    /// is the placeholder with the token's own `tid` put in. `None`: not a
    /// placeholder issuer (the ordinary exact check applies).
    pub fn token_issuer_ok(
        self,
        discovered: &str,
        claims: &BTreeMap<String, Value>,
        iss: &str,
    ) -> Option<bool> {
        if self != IdpProvider::Azure || !discovered.contains(AZURE_TENANT_PLACEHOLDER) {
            return None;
        }
        let tid = claims.get("tid").and_then(Value::as_str).unwrap_or("");
        let tenant_ok = !tid.is_empty()
            && tid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        Some(tenant_ok && iss == discovered.replace(AZURE_TENANT_PLACEHOLDER, tid))
    }

    /// Brings a provider's claims into the shape policies read: `groups` (a list of
    /// strings) and `email_verified`. Only fills what is missing; a `groups` or
    /// `email_verified` claim the IdP sent is kept as it is.
    ///
    /// - cognito: `cognito:groups` → `groups`.
    /// - auth0: a namespaced custom claim ending in `/groups` (an Auth0 Action adds
    ///   one such as `https://example.com/groups`) → `groups`.
    /// - gitlab: `groups_direct` (ID token) → `groups` (userinfo has `groups`).
    /// - azure: `xms_edov: true` (the email's domain is verified by the tenant)
    ///   → `email_verified: true`; Entra sends no `email_verified`, and its
    ///   `email` is otherwise an unverified, user-editable attribute. Groups are
    ///   Entra's `groups` claim (object ids, or names when the app registration
    ///   emits them); with too many groups Entra sends the overage markers
    ///   `_claim_names` / `_claim_sources` instead, which policy evaluation treats
    ///   as groups unknown (fail closed, see `policy`).
    /// - google: `hd` (the Workspace domain) stays a claim (`claim/hd`); Google
    ///   puts no groups in its tokens.
    /// - okta, onelogin, ping, oidc: `groups` as sent.
    pub fn normalize_claims(self, claims: &mut BTreeMap<String, Value>) {
        if !claims.contains_key("groups") {
            let source = match self {
                IdpProvider::Cognito => claims.get("cognito:groups").cloned(),
                IdpProvider::Auth0 => claims
                    .iter()
                    .find(|(k, v)| k.ends_with("/groups") && v.is_array())
                    .map(|(_, v)| v.clone()),
                IdpProvider::Gitlab => claims.get("groups_direct").cloned(),
                _ => None,
            };
            if let Some(groups) = source {
                claims.insert("groups".to_string(), groups);
            }
        }
        if self == IdpProvider::Azure
            && !claims.contains_key("email_verified")
            && claims.get("xms_edov") == Some(&Value::Bool(true))
        {
            claims.insert("email_verified".to_string(), Value::Bool(true));
        }
    }
}

/// Whether `claims` say the `groups` claim was left out of the token and must be
/// fetched elsewhere (OIDC Core §5.6.2 aggregated/distributed claims; Entra ID's
/// group overage): `_claim_names` names `groups` and no `groups` claim is present.
pub fn groups_overage(claims: &BTreeMap<String, Value>) -> bool {
    !claims.contains_key("groups")
        && claims
            .get("_claim_names")
            .and_then(Value::as_object)
            .is_some_and(|names| names.contains_key("groups"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::config::parse_config;
    use serde_json::json;

    fn config(
        provider: &str,
        url: Option<&str>,
        extra: &str,
    ) -> Result<crate::config::Config, String> {
        let url = url
            .map(|u| format!("idp_provider_url: {u}\n"))
            .unwrap_or_default();
        parse_config(
            &format!(
                "authenticate_service_url: https://auth.example.com\nidp_provider: {provider}\n{url}idp_client_id: c\nidp_client_secret: s\n{extra}"
            ),
            "config.yaml",
        )
        .map(|p| p.config)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn every_provider_parses_with_its_derived_issuer_and_scopes() {
        let cases: &[(&str, Option<&str>, &str, &[&str])] = &[
            (
                "oidc",
                Some("https://keycloak.example.com/realms/corp"),
                "https://keycloak.example.com/realms/corp",
                &["openid", "profile", "email", "offline_access"],
            ),
            (
                "google",
                None,
                "https://accounts.google.com",
                &["openid", "profile", "email"],
            ),
            (
                "okta",
                Some("https://example.okta.com/oauth2/default/"),
                "https://example.okta.com/oauth2/default",
                &["openid", "profile", "email", "offline_access"],
            ),
            (
                "azure",
                Some("https://login.microsoftonline.com/0b7c1e5a-1111-2222-3333-444455556666/v2.0"),
                "https://login.microsoftonline.com/0b7c1e5a-1111-2222-3333-444455556666/v2.0",
                &["openid", "profile", "email", "offline_access"],
            ),
            (
                "azure",
                None,
                AZURE_COMMON,
                &["openid", "profile", "email", "offline_access"],
            ),
            (
                "auth0",
                Some("https://example.us.auth0.com"),
                "https://example.us.auth0.com/",
                &["openid", "profile", "email", "offline_access"],
            ),
            (
                "cognito",
                Some("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf"),
                "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf",
                &["openid", "profile", "email"],
            ),
            (
                "gitlab",
                None,
                "https://gitlab.com",
                &["openid", "profile", "email"],
            ),
            (
                "onelogin",
                None,
                "https://openid-connect.onelogin.com/oidc",
                &["openid", "profile", "email", "groups", "offline_access"],
            ),
            (
                "onelogin",
                Some("https://example.onelogin.com/oidc/2"),
                "https://example.onelogin.com/oidc/2",
                &["openid", "profile", "email", "groups"],
            ),
            (
                "ping",
                Some("https://auth.pingone.eu/ENV_ID/as"),
                "https://auth.pingone.eu/ENV_ID/as",
                &["openid", "profile", "email", "offline_access"],
            ),
            ("github", None, GITHUB_COM, &["user:email", "read:org"]),
        ];
        for (name, url, issuer, scopes) in cases {
            let c = config(name, *url, "").unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(c.idp.provider, *name);
            assert_eq!(c.idp.kind().name(), *name);
            assert_eq!(c.idp.issuer(), *issuer, "{name}");
            assert_eq!(c.idp.scopes, *scopes, "{name}");
        }
        // idp_scopes wins over the defaults.
        let c = config("google", None, "idp_scopes: [openid, email]\n").unwrap();
        assert_eq!(c.idp.scopes, ["openid", "email"]);
    }

    #[test]
    fn providers_without_a_fixed_url_require_one_and_unknown_names_are_refused() {
        for name in ["oidc", "okta", "auth0", "cognito", "ping"] {
            let e = config(name, None, "").unwrap_err();
            assert!(e.contains("idp_provider_url"), "{name}: {e}");
            assert!(e.contains(name), "{name}: {e}");
        }
        let e = config("keycloak", Some("https://k.example.com"), "").unwrap_err();
        assert!(e.contains("config.yaml:2"), "{e}");
        assert!(e.contains("expected one of oidc, google, okta, azure, auth0, cognito, gitlab, onelogin, ping, github"), "{e}");
        assert!(e.contains("for Keycloak use oidc"), "{e}");
        // Pomerium's `apple` needs a signed client secret tether does not make.
        let e = config("apple", Some("https://appleid.apple.com"), "").unwrap_err();
        assert!(e.contains("not supported"), "{e}");
    }

    #[test]
    fn github_endpoints_for_github_com_and_enterprise() {
        let com = IdpProvider::github_endpoints(GITHUB_COM);
        assert_eq!(com.authorize, "https://github.com/login/oauth/authorize");
        assert_eq!(com.token, "https://github.com/login/oauth/access_token");
        assert_eq!(com.api, "https://api.github.com");
        let ghe = IdpProvider::github_endpoints("https://ghe.example.com/");
        assert_eq!(
            ghe.authorize,
            "https://ghe.example.com/login/oauth/authorize"
        );
        assert_eq!(ghe.api, "https://ghe.example.com/api/v3");
    }

    #[test]
    fn azure_multi_tenant_issuer() {
        let placeholder = "https://login.microsoftonline.com/{tenantid}/v2.0";
        let az = IdpProvider::Azure;
        assert!(az.discovered_issuer_ok(AZURE_COMMON, placeholder));
        assert!(!IdpProvider::Oidc.discovered_issuer_ok(AZURE_COMMON, placeholder));
        assert!(az.discovered_issuer_ok("https://x/v2.0", "https://x/v2.0"));
        assert!(!az.discovered_issuer_ok("https://x/v2.0", "https://y/v2.0"));
        assert!(az.discovered_issuer_ok(
            "https://login.microsoftonline.com/organizations/v2.0",
            placeholder
        ));
        // A tenant's own endpoint must name its own issuer.
        assert!(!az.discovered_issuer_ok(
            "https://login.microsoftonline.com/0b7c1e5a-1111-2222-3333-444455556666/v2.0",
            placeholder
        ));
        let tid = "0b7c1e5a-1111-2222-3333-444455556666";
        let claims: BTreeMap<String, Value> = [("tid".to_string(), json!(tid))].into();
        let good = format!("https://login.microsoftonline.com/{tid}/v2.0");
        assert_eq!(az.token_issuer_ok(placeholder, &claims, &good), Some(true));
        assert_eq!(
            az.token_issuer_ok(
                placeholder,
                &claims,
                "https://login.microsoftonline.com/other/v2.0"
            ),
            Some(false)
        );
        let evil: BTreeMap<String, Value> = [("tid".to_string(), json!("a/../b"))].into();
        assert_eq!(
            az.token_issuer_ok(
                placeholder,
                &evil,
                "https://login.microsoftonline.com/a/../b/v2.0"
            ),
            Some(false)
        );
        assert_eq!(
            az.token_issuer_ok(placeholder, &BTreeMap::new(), &good),
            Some(false)
        );
        assert_eq!(az.token_issuer_ok(&good, &claims, &good), None);
    }

    fn normalized(p: IdpProvider, claims: Value) -> BTreeMap<String, Value> {
        let mut m: BTreeMap<String, Value> =
            serde_json::from_value::<serde_json::Map<String, Value>>(claims)
                .unwrap()
                .into_iter()
                .collect();
        p.normalize_claims(&mut m);
        m
    }

    #[test]
    fn groups_and_email_verified_per_provider() {
        let m = normalized(
            IdpProvider::Cognito,
            json!({"cognito:groups": ["admins"], "email_verified": "true"}),
        );
        assert_eq!(m["groups"], json!(["admins"]));
        let m = normalized(
            IdpProvider::Auth0,
            json!({"https://example.com/groups": ["sre"], "https://example.com/roles": ["x"]}),
        );
        assert_eq!(m["groups"], json!(["sre"]));
        let m = normalized(
            IdpProvider::Gitlab,
            json!({"groups_direct": ["corp/infra"]}),
        );
        assert_eq!(m["groups"], json!(["corp/infra"]));
        // What the IdP sent as `groups` is kept.
        let m = normalized(
            IdpProvider::Cognito,
            json!({"groups": ["a"], "cognito:groups": ["b"]}),
        );
        assert_eq!(m["groups"], json!(["a"]));
        // Other providers' look-alike claims are not taken.
        let m = normalized(
            IdpProvider::Oidc,
            json!({"cognito:groups": ["b"], "https://e/groups": ["c"]}),
        );
        assert!(!m.contains_key("groups"));
        let m = normalized(IdpProvider::Okta, json!({"groups": ["Everyone"]}));
        assert_eq!(m["groups"], json!(["Everyone"]));
        // Entra: email verified only with xms_edov.
        let m = normalized(
            IdpProvider::Azure,
            json!({"email": "a@corp.example", "xms_edov": true}),
        );
        assert_eq!(m["email_verified"], json!(true));
        let m = normalized(IdpProvider::Azure, json!({"email": "a@corp.example"}));
        assert!(!m.contains_key("email_verified"));
        let m = normalized(
            IdpProvider::Azure,
            json!({"xms_edov": true, "email_verified": false}),
        );
        assert_eq!(m["email_verified"], json!(false));
        let m = normalized(IdpProvider::Oidc, json!({"xms_edov": true}));
        assert!(!m.contains_key("email_verified"));
        // Google's hd stays a claim.
        let m = normalized(IdpProvider::Google, json!({"hd": "example.com"}));
        assert_eq!(m["hd"], json!("example.com"));
        // Entra overage.
        let over = normalized(
            IdpProvider::Azure,
            json!({"_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {"endpoint": "https://graph.windows.net/t/users/o/getMemberObjects"}}}),
        );
        assert!(groups_overage(&over));
        assert!(!groups_overage(&normalized(
            IdpProvider::Azure,
            json!({"groups": []})
        )));
    }
}
