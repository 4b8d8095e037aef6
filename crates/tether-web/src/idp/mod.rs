//! Identity providers that are not plain OpenID Connect. The OIDC-based providers
//! Pomerium names (google, okta, azure, auth0, cognito, gitlab, onelogin, ping) go
//! through [`crate::oidc`] with the facts from `tether_core::config::IdpProvider`
//! (issuer, scopes, authorization parameters, claim mapping); GitHub, OAuth2
//! without OIDC, is [`github`].

pub(crate) mod github;
