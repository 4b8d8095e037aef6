//! Identity refresh (SPEC §5): a signed-in identity is not frozen at sign-in. At
//! sign-in the IdP's refresh token is sealed with `cookie_secret` and stored with
//! the session; [`Refresher`] then redeems it every `idp_session_refresh_interval`
//! for the person's current claims (groups, email, `email_verified`, …) and stores
//! them, which publishes `SessionRefreshed`: the SSH side re-checks the live
//! connections of that session against their routes' policies with the fresh
//! claims, and new connections see them at once (they read the session).
//!
//! Outcomes of one refresh:
//! - new claims → stored (and a rotated refresh token), next refresh in one interval;
//! - the IdP refuses the token (`invalid_grant`: grant revoked, user disabled,
//!   token expired) or answers for another subject → the session is ended exactly
//!   like a sign-out (its user's client bindings revoked, their connections cut);
//! - the IdP cannot be asked (network, 5xx, a malformed answer) → the session is kept
//!   and retried, for at most `idp_session_refresh_grace` since the first failure;
//!   then it is ended (fail closed).
//!
//! With several replicas each runs a refresher; the store's claim (a
//! compare-and-set on the next-due time) gives each due session to one of them, so a
//! refresh token is never redeemed twice at once (IdPs that rotate refresh tokens
//! revoke the whole grant on reuse). A session whose IdP issued no refresh token
//! (no `offline_access`) is not refreshed; the sign-in logs a warning.

use std::sync::Arc;
use std::time::Duration;

use tether_core::config::SessionRefresh;
use tether_core::{Clock, Secret, Session, Timestamp};
use tether_store::{RefreshClaim, Store, StoreError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cookies::Sealer;
use crate::error::WebError;
use crate::oidc::{Oidc, RefreshError};
use crate::{AppState, WebDeps};

/// The reason a session ended by the IdP carries to its connections' clients.
pub(crate) const REASON_IDP_ENDED: &str = "signed out by the identity provider";
/// The reason when the IdP stayed unreachable past the grace period.
pub(crate) const REASON_IDP_UNREACHABLE: &str =
    "the identity provider could not confirm the session";
/// Sessions claimed per round.
const BATCH: usize = 64;
/// Refreshes in flight at once.
const PARALLEL: usize = 8;
/// How long a claimed session is kept from other replicas while its refresh runs
/// (longer than the HTTP client's 15 s timeout, twice over).
const LEASE: Duration = Duration::from_secs(60);
/// Longest wait before retrying a refresh that could not reach the IdP.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Stores the sealed refresh token of a new session, due one interval from now;
/// without one, says that this session's identity will not be refreshed.
pub(crate) async fn remember_token(
    state: &AppState,
    session: &Session,
    token: Option<&Secret<String>>,
) -> Result<(), WebError> {
    let Some(token) = token else {
        tracing::warn!(
            user = %session.user_id(),
            "the IdP issued no refresh token (offline_access in idp_scopes and the \
             refresh_token grant allowed for the client?): this session's identity \
             is not refreshed until it expires"
        );
        return Ok(());
    };
    let sealed = state.sealer.seal_refresh_token(token.expose())?;
    let due = session
        .issued_at
        .plus(state.config.session_refresh.interval);
    state
        .store
        .set_session_refresh(&session.id, &sealed, due)
        .await?;
    Ok(())
}

/// The background identity refresher; see the module docs. Run one per process.
pub struct Refresher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    oidc: Oidc,
    sealer: Sealer,
    every: SessionRefresh,
}

/// What became of one claimed session.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Refreshed,
    Ended,
    Retrying,
    /// The session went away meanwhile (signed out, expired).
    Gone,
}

impl Refresher {
    /// A refresher for the web app's configuration, store, clock and cookie key.
    pub fn new(deps: &WebDeps) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: deps.store.clone(),
                clock: deps.clock.clone(),
                oidc: Oidc::new(&deps.config),
                sealer: Sealer::new(&deps.cookie_key),
                every: deps.config.session_refresh,
            }),
        }
    }

    /// How often the store is asked for due sessions: half the interval, between
    /// 1 s and 30 s.
    fn poll_every(&self) -> Duration {
        (self.inner.every.interval / 2).clamp(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// Refreshes due sessions until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.poll_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.round() => if let Err(e) = r {
                    tracing::warn!(error = %e, "identity refresh: the store failed; retrying");
                }
            }
        }
    }

    /// Claims and refreshes every session due now (in batches).
    async fn round(&self) -> Result<(), StoreError> {
        loop {
            let now = self.inner.clock.now();
            let claims = self
                .inner
                .store
                .claim_session_refreshes(now, now.plus(LEASE), BATCH)
                .await?;
            let full = claims.len() == BATCH;
            let mut tasks = JoinSet::new();
            for claim in claims {
                while tasks.len() >= PARALLEL {
                    tasks.join_next().await;
                }
                let inner = self.inner.clone();
                tasks.spawn(async move { inner.refresh_one(claim).await });
            }
            while tasks.join_next().await.is_some() {}
            if !full {
                return Ok(());
            }
        }
    }
}

impl Inner {
    async fn refresh_one(&self, claim: RefreshClaim) -> Outcome {
        let result = match self.sealer.open_refresh_token(&claim.token) {
            Some(token) => self.oidc.refresh(&claim.user_id, &Secret::new(token)).await,
            None => Err(RefreshError::Revoked(
                "the stored refresh token does not open (cookie_secret changed?)".into(),
            )),
        };
        let now = self.clock.now();
        let outcome = self.settle(&claim, result, now).await;
        match outcome {
            Ok(o) => o,
            Err(e) => {
                // The lease expires and the session is claimed again.
                tracing::warn!(error = %e, "identity refresh: storing the outcome failed");
                Outcome::Retrying
            }
        }
    }

    async fn settle(
        &self,
        claim: &RefreshClaim,
        result: Result<crate::oidc::SignedIn, RefreshError>,
        now: Timestamp,
    ) -> Result<Outcome, WebError> {
        match result {
            Ok(fresh) => {
                let sealed = fresh
                    .refresh_token
                    .as_ref()
                    .map(|t| self.sealer.seal_refresh_token(t.expose()))
                    .transpose()?;
                let stored = self
                    .store
                    .session_refreshed(
                        &claim.session_id,
                        &fresh.identity,
                        sealed.as_deref(),
                        now.plus(self.every.interval),
                    )
                    .await?;
                if !stored {
                    return Ok(Outcome::Gone);
                }
                tracing::debug!(user = %claim.user_id, "identity refreshed at the IdP");
                Ok(Outcome::Refreshed)
            }
            Err(RefreshError::Revoked(detail)) => {
                tracing::warn!(
                    user = %claim.user_id,
                    detail = %detail,
                    "the IdP ended the session: signing it out"
                );
                self.end(claim, REASON_IDP_ENDED).await
            }
            Err(RefreshError::Unavailable(detail)) => {
                let since = claim.failing_since.unwrap_or(now);
                if since.plus(self.every.grace) <= now {
                    tracing::warn!(
                        user = %claim.user_id,
                        detail = %detail,
                        grace_secs = self.every.grace.as_secs(),
                        "identity refresh failed past the grace period: signing the session out"
                    );
                    return self.end(claim, REASON_IDP_UNREACHABLE).await;
                }
                tracing::warn!(
                    user = %claim.user_id,
                    detail = %detail,
                    "identity refresh failed; keeping the session and retrying"
                );
                let retry = self.every.interval.min(RETRY_MAX);
                self.store
                    .session_refresh_failed(&claim.session_id, since, now.plus(retry))
                    .await?;
                Ok(Outcome::Retrying)
            }
        }
    }

    /// Ends the session as a sign-out does: its user's client bindings revoked and
    /// their connections cut, with `reason`.
    async fn end(&self, claim: &RefreshClaim, reason: &str) -> Result<Outcome, WebError> {
        let out = self.store.sign_out(&claim.session_id, reason).await?;
        tracing::info!(
            user = %claim.user_id,
            revoked_bindings = out.revoked_bindings.len(),
            reason,
            "session ended after identity refresh"
        );
        Ok(Outcome::Ended)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tether_core::Identity;
    use tether_store::MemoryStore;

    fn inner(store: Arc<dyn Store>) -> Inner {
        let config = crate::tests::support::config("http://127.0.0.1:9", "http://127.0.0.1:9");
        Inner {
            store,
            clock: Arc::new(tether_core::SystemClock),
            oidc: Oidc::new(&config),
            sealer: Sealer::new(&[7u8; 32]),
            every: SessionRefresh {
                interval: Duration::from_secs(60),
                grace: Duration::from_secs(300),
            },
        }
    }

    async fn session(store: &dyn Store, r: &Inner, now: Timestamp) -> Session {
        let s = Session {
            id: "s1".into(),
            identity: Identity {
                subject: "alice-sub".into(),
                email: "alice@example.com".into(),
                name: None,
                claims: Default::default(),
            },
            issued_at: now,
            expires_at: now.plus(Duration::from_secs(3600)),
        };
        store.create_session(&s).await.unwrap();
        let sealed = r.sealer.seal_refresh_token("rt").unwrap();
        store
            .set_session_refresh(&s.id, &sealed, now)
            .await
            .unwrap();
        s
    }

    async fn claim(store: &dyn Store, now: Timestamp) -> Option<RefreshClaim> {
        store
            .claim_session_refreshes(now, now, 10)
            .await
            .unwrap()
            .into_iter()
            .next()
    }

    #[tokio::test]
    async fn unreachable_idp_keeps_the_session_for_the_grace_period_then_ends_it() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let r = inner(store.clone());
        let t0 = tether_core::SystemClock.now();
        let s = session(&*store, &r, t0).await;
        let down = || Err(RefreshError::Unavailable("connection refused".into()));

        let c = claim(&*store, t0).await.unwrap();
        assert_eq!(r.settle(&c, down(), t0).await.unwrap(), Outcome::Retrying);
        let t1 = t0.plus(Duration::from_secs(299));
        let c = claim(&*store, t1).await.unwrap();
        assert_eq!(c.failing_since, Some(t0));
        assert_eq!(r.settle(&c, down(), t1).await.unwrap(), Outcome::Retrying);
        assert!(store.get_session(&s.id).await.unwrap().is_some(), "kept");

        let t2 = t0.plus(Duration::from_secs(330));
        let c = claim(&*store, t2).await.unwrap();
        assert_eq!(r.settle(&c, down(), t2).await.unwrap(), Outcome::Ended);
        assert!(
            store.get_session(&s.id).await.unwrap().is_none(),
            "failed closed"
        );
    }

    #[tokio::test]
    async fn a_success_clears_failures_and_a_refusal_signs_out() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let r = inner(store.clone());
        let t0 = tether_core::SystemClock.now();
        let s = session(&*store, &r, t0).await;
        let mut feed = store.subscribe();

        let c = claim(&*store, t0).await.unwrap();
        let down = Err(RefreshError::Unavailable("503".into()));
        r.settle(&c, down, t0).await.unwrap();
        let t1 = t0.plus(Duration::from_secs(30));
        let c = claim(&*store, t1).await.unwrap();
        let mut fresh = s.identity.clone();
        fresh
            .claims
            .insert("groups".into(), serde_json::json!(["dev"]));
        let ok = Ok(crate::oidc::SignedIn {
            identity: fresh.clone(),
            refresh_token: Some(Secret::new("rt2".into())),
        });
        assert_eq!(r.settle(&c, ok, t1).await.unwrap(), Outcome::Refreshed);
        assert_eq!(
            store.get_session(&s.id).await.unwrap().unwrap().identity,
            fresh
        );
        assert!(
            claim(&*store, t1).await.is_none(),
            "next one an interval on"
        );
        let t2 = t1.plus(Duration::from_secs(60));
        let c = claim(&*store, t2).await.unwrap();
        assert_eq!(c.failing_since, None);
        assert_eq!(r.sealer.open_refresh_token(&c.token).unwrap(), "rt2");
        assert!(!format!("{c:?}").contains(&c.token), "never printed");

        let gone = Err(RefreshError::Revoked("invalid_grant".into()));
        assert_eq!(r.settle(&c, gone, t2).await.unwrap(), Outcome::Ended);
        assert!(store.get_session(&s.id).await.unwrap().is_none());
        let mut saw = Vec::new();
        while let Ok(ev) = feed.try_recv() {
            saw.push(ev);
        }
        assert!(saw.contains(&tether_store::StoreEvent::SessionRefreshed {
            session_id: s.id.clone()
        }));
        assert!(saw.contains(&tether_store::StoreEvent::SessionEnded {
            session_id: s.id.clone(),
            reason: REASON_IDP_ENDED.into()
        }));
    }

    #[tokio::test]
    async fn a_token_that_does_not_open_ends_the_session() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let r = inner(store.clone());
        let t0 = tether_core::SystemClock.now();
        let s = session(&*store, &r, t0).await;
        store
            .set_session_refresh(&s.id, "not-sealed", t0)
            .await
            .unwrap();
        let c = claim(&*store, t0).await.unwrap();
        assert_eq!(r.refresh_one(c).await, Outcome::Ended);
        assert!(store.get_session(&s.id).await.unwrap().is_none());
    }
}
