//! The browser side, done with reqwest: one signed-in web session (cookie jar) used to
//! approve sign-in codes on the Verify page, read the bindings page and press Revoke.
//!
//! Two clients share the jar: `follow` follows redirects (sign-in, pages), `direct`
//! does not, so a revoke's timing ends at its own `303`, not at the page it points to.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use reqwest::cookie::Jar;
use reqwest::{redirect, Client, StatusCode};
use url::Url;

use crate::html::{input_value, inputs};

/// Per-request timeout for every HTTP call.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// A web session on tether's web app.
pub struct Web {
    base: Url,
    follow: Client,
    direct: Client,
    csrf: Mutex<Option<String>>,
}

/// What one revoke POST gave: its status, when it was sent and when its response
/// (status line and headers) arrived.
#[derive(Debug, Clone, Copy)]
pub struct Revoked {
    pub status: StatusCode,
    pub sent: Instant,
    pub response: Instant,
}

impl Web {
    /// Clients for `base` (`http://host:port`), not signed in yet.
    pub fn new(base: &str) -> Result<Web> {
        let base = Url::parse(base).context("web base URL")?;
        let jar = Arc::new(Jar::default());
        let build = |policy: redirect::Policy| {
            Client::builder()
                .cookie_provider(jar.clone())
                .redirect(policy)
                .timeout(HTTP_TIMEOUT)
                .tcp_nodelay(true)
                .build()
        };
        Ok(Web {
            follow: build(redirect::Policy::limited(10))?,
            direct: build(redirect::Policy::none())?,
            base,
            csrf: Mutex::new(None),
        })
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .with_context(|| format!("URL for {path}"))
    }

    /// Signs in as `username` through the development IdP: the bindings page redirects
    /// to `/dev-idp/authorize`, whose form is posted back with the credentials; the
    /// IdP redirects to `/oauth2/callback`, which sets the session cookie and returns
    /// to the bindings page.
    pub async fn sign_in(&self, username: &str, password: &str) -> Result<()> {
        let res = self
            .follow
            .get(self.url("/.pomerium/session_binding_info")?)
            .send()
            .await
            .context("GET /.pomerium/session_binding_info")?;
        let login_url = res.url().clone();
        let status = res.status();
        let page = res.text().await?;
        ensure!(
            status == StatusCode::OK && login_url.path().ends_with("/dev-idp/authorize"),
            "expected the dev IdP login form, got {status} at {login_url}"
        );
        let mut form: Vec<(String, String)> = inputs(&page)
            .into_iter()
            .filter(|(n, _)| n != "username" && n != "password")
            .collect();
        form.push(("username".into(), username.into()));
        form.push(("password".into(), password.into()));
        let res = self
            .follow
            .post(login_url.join("authorize")?)
            .form(&form)
            .send()
            .await
            .context("POST /dev-idp/authorize")?;
        let status = res.status();
        let landed = res.url().clone();
        let body = res.text().await?;
        ensure!(
            status == StatusCode::OK && landed.path() == "/.pomerium/session_binding_info",
            "sign-in did not land on the bindings page: {status} at {landed}: {}",
            body.chars().take(300).collect::<String>()
        );
        Ok(())
    }

    /// Authorizes a sign-in code: opens `sign_in_url` (the Verify page), then posts
    /// `confirm=true` with the page's CSRF token. Remembers the token.
    pub async fn approve(&self, sign_in_url: &str) -> Result<()> {
        let url = Url::parse(sign_in_url).context("sign-in URL")?;
        ensure!(
            url.origin() == self.base.origin(),
            "sign-in URL {url} is not on {}",
            self.base
        );
        let res = self.follow.get(url.clone()).send().await?;
        let status = res.status();
        let page = res.text().await?;
        ensure!(status == StatusCode::OK, "Verify page: {status}");
        let csrf = input_value(&page, "csrf_token").context("no csrf_token on the Verify page")?;
        let res = self
            .follow
            .post(url)
            .form(&[("confirm", "true"), ("csrf_token", csrf.as_str())])
            .send()
            .await?;
        let status = res.status();
        let page = res.text().await?;
        ensure!(
            status == StatusCode::OK && page.contains("Sign in successful"),
            "Authorize: {status}: {}",
            page.chars().take(300).collect::<String>()
        );
        *self.csrf.lock().unwrap() = Some(csrf);
        Ok(())
    }

    /// The CSRF token seen on the last Verify page (one per web session).
    pub fn csrf_seen(&self) -> Option<String> {
        self.csrf.lock().unwrap().clone()
    }

    /// The bindings page's HTML.
    pub async fn bindings_page(&self) -> Result<String> {
        let res = self
            .direct
            .get(self.url("/.pomerium/session_binding_info")?)
            .send()
            .await?;
        let status = res.status();
        let page = res.text().await?;
        if status != StatusCode::OK {
            bail!("bindings page: {status}");
        }
        Ok(page)
    }

    /// Presses Revoke for `binding_id`; does not follow the `303`.
    pub async fn revoke(&self, binding_id: &str, csrf: &str) -> Result<Revoked> {
        let request = self
            .direct
            .post(self.url("/.pomerium/session_binding/revoke")?)
            .form(&[("sessionBindingID", binding_id), ("csrf_token", csrf)])
            .build()?;
        let sent = Instant::now();
        let res = self.direct.execute(request).await?;
        let response = Instant::now();
        Ok(Revoked {
            status: res.status(),
            sent,
            response,
        })
    }
}

impl Web {
    /// Ends live session `id` through the bindings page's Disconnect POST.
    pub async fn end_session(&self, id: &str, csrf: &str) -> Result<Revoked> {
        let request = self
            .direct
            .post(self.url("/.tether/sessions/end")?)
            .form(&[
                ("session_id", id),
                ("csrf_token", csrf),
                ("back", "bindings"),
            ])
            .build()?;
        let sent = Instant::now();
        let res = self.direct.execute(request).await?;
        let response = Instant::now();
        Ok(Revoked {
            status: res.status(),
            sent,
            response,
        })
    }
}

/// Per row of the bindings page's live sessions: `(session id, binding id)`.
pub fn session_rows(page: &str) -> Vec<(String, String)> {
    page.split("<tr class=\"session\" data-session-id=\"")
        .skip(1)
        .filter_map(|row| {
            let id = row.split('"').next()?;
            let fp = row
                .split("<code class=\"fingerprint\">")
                .nth(1)?
                .split('<')
                .next()?;
            let fp = html_escape::decode_html_entities(fp);
            Some((id.to_string(), format!("sshkey-{fp}")))
        })
        .collect()
}

/// Per binding row of the bindings page: `(binding id, live connections)`.
pub fn binding_rows(page: &str) -> Vec<(String, u32)> {
    page.split("<tr class=\"binding\" data-binding-id=\"")
        .skip(1)
        .filter_map(|row| {
            let id = row.split('"').next()?;
            let live = row
                .split("<td class=\"live\">")
                .nth(1)?
                .split('<')
                .next()?
                .trim()
                .parse()
                .ok()?;
            Some((html_escape::decode_html_entities(id).into_owned(), live))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_session_rows() {
        let page = "<table id=\"sessions\"><tr><th>x</th></tr>\
            <tr class=\"session\" data-session-id=\"ab12-3\"><td class=\"mono\">ab12-3</td>\
            <td><code class=\"fingerprint\">SHA256:abc+/</code></td></tr></table>";
        assert_eq!(
            session_rows(page),
            vec![("ab12-3".to_string(), "sshkey-SHA256:abc+/".to_string())]
        );
    }

    #[test]
    fn reads_binding_rows() {
        let page = "<table id=\"bindings\"><tr><th>x</th></tr>\
            <tr class=\"binding\" data-binding-id=\"sshkey-SHA256:abc+/\"><td>ssh</td>\
            <td class=\"live\">1</td></tr>\
            <tr class=\"binding\" data-binding-id=\"sshkey-SHA256:def\"><td>ssh</td>\
            <td class=\"live\">0</td></tr></table>";
        assert_eq!(
            binding_rows(page),
            vec![
                ("sshkey-SHA256:abc+/".to_string(), 1),
                ("sshkey-SHA256:def".to_string(), 0)
            ]
        );
    }
}
