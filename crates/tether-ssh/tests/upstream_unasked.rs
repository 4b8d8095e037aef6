//! An upstream cannot open channels towards the client that the client never asked
//! for. The upstream here is a hostile russh server (not sshd, which would never
//! try): when a command starts it opens an agent channel, an X11 channel and a
//! `forwarded-tcpip` channel towards tether, and prints what became of each. The
//! client is the real OpenSSH `ssh`, through tether's real server.
//!
//! Without agent forwarding, X11 or `-R` asked for, all three are refused by tether
//! — shown with a client that would accept anything (russh's client defaults;
//! OpenSSH refuses such channels itself); once the client asks for agent
//! forwarding, the agent channel is opened — so the test tells the two apart.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod route_support;
mod upstream_support;

use std::sync::Arc;
use std::time::Duration;

use russh::keys::ssh_key::Certificate;
use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId};

use common::*;
use route_support::*;
use upstream_support::{can_run_sshd, new_key, USER};

/// The hostile upstream: accepts tether's certificate, answers yes to everything,
/// and on `exec` tries to open channels towards the client.
struct Hostile;

impl server::Handler for Hostile {
    type Error = russh::Error;

    async fn auth_openssh_certificate(
        &mut self,
        _: &str,
        _: &Certificate,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        _: Channel<Msg>,
        reply: ChannelOpenHandle,
        _: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn agent_request(&mut self, _: ChannelId, _: &mut Session) -> Result<bool, Self::Error> {
        Ok(true)
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        _: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(id)?;
        let handle = session.handle();
        tokio::spawn(async move {
            let agent = attempt(handle.channel_open_agent()).await;
            let x11 = attempt(handle.channel_open_x11("127.0.0.1", 6010)).await;
            let forwarded =
                attempt(handle.channel_open_forwarded_tcpip("127.0.0.1", 8022, "127.0.0.1", 40000))
                    .await;
            let report = format!("agent {agent}\nx11 {x11}\nforwarded-tcpip {forwarded}\n");
            let _ = handle.data(id, report.into_bytes()).await;
            let _ = handle.exit_status_request(id, 0).await;
            let _ = handle.eof(id).await;
            let _ = handle.close(id).await;
        });
        Ok(())
    }
}

/// What became of a channel open towards the client (an opened one is closed
/// again, as an agent client would when done).
async fn attempt(
    open: impl std::future::Future<Output = Result<Channel<Msg>, russh::Error>>,
) -> &'static str {
    match tokio::time::timeout(Duration::from_secs(10), open).await {
        Ok(Ok(channel)) => {
            let _ = channel.close().await;
            "opened"
        }
        Ok(Err(_)) => "refused",
        Err(_) => "no answer",
    }
}

/// Starts the hostile upstream on a free port; its address.
async fn hostile_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = Arc::new(server::Config {
        keys: vec![new_key()],
        auth_rejection_time: Duration::from_millis(10),
        ..Default::default()
    });
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let config = config.clone();
            tokio::spawn(async move {
                if let Ok(s) = server::run_stream(config, sock, Hostile).await {
                    let _ = s.await;
                }
            });
        }
    });
    addr
}

async fn gateway_to_hostile() -> (Gateway, ClientKey) {
    let addr = hostile_upstream().await;
    let mut config = config_with(vec![route("hostile", &addr, None, true)]);
    // Everything permitted on the route: only what the client asked for counts.
    permit_all(&mut config, "hostile");
    let gw = start_config(config).await;
    let key = keygen();
    sign_in(&gw, &key, "alice@example.com").await;
    (gw, key)
}

/// `ssh ... tetheruser@hostile@gateway probe`, with `ssh -A` and `agent` when
/// given (OpenSSH forwards no agent under client_opts' `IdentityAgent=none`).
fn probe(gw: &Gateway, key: &ClientKey, agent: Option<&TestAgent>) -> SshRun {
    let mut cmd = tokio::process::Command::new("/usr/bin/ssh");
    match agent {
        None => cmd.args(client_opts(key)),
        // In place of `IdentityAgent=none`, so the `-o` before it stays paired.
        Some(agent) => cmd
            .args(client_opts(key).into_iter().map(|o| {
                if o == "IdentityAgent=none" {
                    "ForwardAgent=yes".to_string()
                } else {
                    o
                }
            }))
            .env("SSH_AUTH_SOCK", &agent.sock),
    };
    cmd.args(["-p", &gw.addr.port().to_string()])
        .arg(format!("{USER}@hostile@127.0.0.1"))
        .arg("probe");
    SshRun::spawn(cmd)
}

/// A client that accepts every channel the server opens (russh's defaults): unlike
/// OpenSSH, it does not protect itself, so only tether stands in the way.
struct Permissive;

impl russh::client::Handler for Permissive {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true) // test only: the gateway's host key is random
    }
}

/// Runs `probe` from the permissive client (asking for agent forwarding first
/// when `agent`); the upstream's report.
async fn permissive_probe(gw: &Gateway, key: &ClientKey, agent: bool) -> String {
    let config = Arc::new(russh::client::Config::default());
    let mut client = russh::client::connect(config, gw.addr, Permissive)
        .await
        .unwrap();
    let secret = russh::keys::load_secret_key(&key.path, None).unwrap();
    let key = russh::keys::PrivateKeyWithHashAlg::new(Arc::new(secret), None);
    let auth = client
        .authenticate_publickey(format!("{USER}@hostile"), key)
        .await
        .unwrap();
    assert!(auth.success(), "{auth:?}");
    let mut ch = client.channel_open_session().await.unwrap();
    if agent {
        ch.agent_forward(true).await.unwrap();
    }
    ch.exec(true, "probe").await.unwrap();
    let mut out = Vec::new();
    let drained = async {
        while let Some(msg) = ch.wait().await {
            match msg {
                russh::ChannelMsg::Data { data } => out.extend_from_slice(&data),
                russh::ChannelMsg::Close => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(T, drained).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_the_client_did_not_ask_for_never_reach_it() {
    if !can_run_sshd() {
        return;
    }
    let (gw, key) = gateway_to_hostile().await;
    let out = permissive_probe(&gw, &key, false).await;
    assert!(out.contains("agent refused"), "{out}");
    assert!(out.contains("x11 refused"), "{out}");
    assert!(out.contains("forwarded-tcpip refused"), "{out}");

    // The same from OpenSSH (which would refuse them itself too).
    let done = probe(&gw, &key, None).finish(T).await;
    assert!(done.status.success(), "{}", done.stderr);
    assert!(done.stdout.contains("agent refused"), "{}", done.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_channel_is_relayed_once_the_client_asked_for_it() {
    if !can_run_sshd() {
        return;
    }
    let (gw, key) = gateway_to_hostile().await;
    let out = permissive_probe(&gw, &key, true).await;
    assert!(out.contains("agent opened"), "{out}");
    // Still refused: the client asked for the agent only.
    assert!(out.contains("x11 refused"), "{out}");
    assert!(out.contains("forwarded-tcpip refused"), "{out}");

    let agent = start_agent().await;
    let done = probe(&gw, &key, Some(&agent)).finish(T).await;
    assert!(done.status.success(), "{}", done.stderr);
    assert!(done.stdout.contains("agent opened"), "{}", done.stdout);
}
