//! The upstream client against a real OpenSSH sshd: certificate login, exec, exit
//! status, stdout/stderr, host key policies, errors, upstream-initiated channels.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod upstream_support;

use std::time::{Duration, Instant};

use tether_ssh::upstream::{connect, UpstreamError, UpstreamEvent, UpstreamTarget};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use upstream_support::*;

#[tokio::test(flavor = "multi_thread")]
async fn cert_login_exec_and_audit_log() {
    if !can_run_sshd() {
        return;
    }
    let ca = new_key();
    let sshd = Sshd::start(ca.public_key(), &new_key(), None, "");
    let (tx, _rx) = mpsc::channel(8);
    let up = connect(
        &grant(&target(&sshd), &user(USER)),
        &ca,
        &accept_new(memory_store()),
        tx,
    )
    .await
    .unwrap();
    assert_eq!(
        up.host_key_fingerprint(),
        fingerprint(sshd.host_key.public_key())
    );

    let (ch, mut reader) = up.open_session().await.unwrap();
    assert!(ch.exec(b"id -un").await.unwrap());
    let (out, err, status) = collect(&mut reader).await;
    assert_eq!(String::from_utf8_lossy(&out), format!("{USER}\n"));
    assert!(err.is_empty());
    assert_eq!(status, Some(0));
    assert!(
        sshd.wait_log("Accepted certificate ID \"alice@example.com\"")
            .await,
        "{}",
        sshd.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn banner_exit_status_and_separate_stderr() {
    if !can_run_sshd() {
        return;
    }
    let ca = new_key();
    let banner_dir = tempfile::tempdir().unwrap();
    let banner = banner_dir.path().join("banner");
    std::fs::write(&banner, "Authorized use only.\n").unwrap();
    let sshd = Sshd::start(
        ca.public_key(),
        &new_key(),
        None,
        &format!("Banner {}", banner.display()),
    );
    let (tx, _rx) = mpsc::channel(8);
    let up = connect(
        &grant(&target(&sshd), &user(USER)),
        &ca,
        &accept_new(memory_store()),
        tx,
    )
    .await
    .unwrap();
    assert_eq!(up.banner(), Some("Authorized use only.\n"));

    let (ch, mut reader) = up.open_session().await.unwrap();
    assert!(ch.exec(b"sh -c 'exit 7'").await.unwrap());
    let (_, _, status) = collect(&mut reader).await;
    assert_eq!(status, Some(7));

    let (ch, mut reader) = up.open_session().await.unwrap();
    assert!(ch.set_env("TETHER_TEST_X", "from-env").await.unwrap());
    assert!(!ch.set_env("NOT_ACCEPTED", "x").await.unwrap());
    assert!(ch
        .exec(b"echo out; echo err >&2; echo $TETHER_TEST_X; exit 3")
        .await
        .unwrap());
    let (out, err, status) = collect(&mut reader).await;
    assert_eq!(String::from_utf8_lossy(&out), "out\nfrom-env\n");
    assert_eq!(String::from_utf8_lossy(&err), "err\n");
    assert_eq!(status, Some(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn accept_new_pins_then_refuses_a_changed_key() {
    if !can_run_sshd() {
        return;
    }
    let ca = new_key();
    let first_key = new_key();
    let store = memory_store();
    let check = accept_new(store.clone());
    let sshd = Sshd::start(ca.public_key(), &first_key, None, "");
    let port = sshd.port;
    let tgt = target(&sshd);
    {
        let (tx, _rx) = mpsc::channel(8);
        let up = connect(&grant(&tgt, &user(USER)), &ca, &check, tx)
            .await
            .unwrap();
        drop(up);
    }
    let pinned = store.pinned_host_key(&tgt.address).await.unwrap().unwrap();
    let pinned_key = russh::keys::PublicKey::from_openssh(&pinned.public_key).unwrap();
    assert_eq!(pinned_key.key_data(), first_key.public_key().key_data());

    // same key again: accepted
    {
        let (tx, _rx) = mpsc::channel(8);
        connect(&grant(&tgt, &user(USER)), &ca, &check, tx)
            .await
            .unwrap();
    }

    drop(sshd);
    let second_key = new_key();
    let sshd = Sshd::start(ca.public_key(), &second_key, Some(port), "");
    let (tx, _rx) = mpsc::channel(8);
    let err = connect(&grant(&tgt, &user(USER)), &ca, &check, tx)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, UpstreamError::HostKeyChanged { .. }),
        "{err:?}"
    );
    assert_eq!(
        msg,
        format!(
            "upstream host key for route \"prod\" changed: expected {}, got {}",
            fingerprint(first_key.public_key()),
            fingerprint(second_key.public_key())
        )
    );
    assert!(!msg.contains('\n'));
    // the pin did not move
    let still = store.pinned_host_key(&tgt.address).await.unwrap().unwrap();
    assert_eq!(still, pinned);
    // and nothing logged in
    assert!(
        !sshd.log().contains("Accepted certificate"),
        "{}",
        sshd.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_uses_the_known_hosts_file() {
    if !can_run_sshd() {
        return;
    }
    let ca = new_key();
    let host_key = new_key();
    let sshd = Sshd::start(ca.public_key(), &host_key, None, "");
    let tgt = target(&sshd);
    let key_line = host_key.public_key().to_openssh().unwrap();
    let kh = sshd.path("known_hosts");
    let try_with = |contents: String| {
        let tgt = tgt.clone();
        let kh = kh.clone();
        let ca = ca.clone();
        async move {
            std::fs::write(&kh, contents).unwrap();
            let (tx, _rx) = mpsc::channel(8);
            connect(&grant(&tgt, &user(USER)), &ca, &strict(&kh), tx).await
        }
    };

    // listed as [127.0.0.1]:port, with comments and an unrelated host around it
    let ok = try_with(format!(
        "# comment\nother.example.com {}\n[127.0.0.1]:{} {key_line}\n",
        new_key().public_key().to_openssh().unwrap(),
        sshd.port
    ))
    .await;
    assert!(ok.is_ok(), "{:?}", ok.err());

    // wildcard pattern
    let ok = try_with(format!("[127.0.0.*]:{},!nothing {key_line}\n", sshd.port)).await;
    assert!(ok.is_ok(), "{:?}", ok.err());

    // hashed entry, as `ssh-keygen -H` writes it
    let plain = sshd.path("plain_kh");
    std::fs::write(&plain, format!("[127.0.0.1]:{} {key_line}\n", sshd.port)).unwrap();
    let st = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&plain)
        .output()
        .unwrap();
    assert!(st.status.success());
    let hashed = std::fs::read_to_string(&plain).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");
    assert!(try_with(hashed).await.is_ok());

    // not listed: refused, naming the route and the fingerprint
    let err = try_with(format!("[127.0.0.1]:1 {key_line}\n"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, UpstreamError::HostKeyUntrusted { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("\"prod\""), "{msg}");
    assert!(msg.contains(&fingerprint(host_key.public_key())), "{msg}");

    // a different key listed for the host: refused as changed
    let other = new_key();
    let err = try_with(format!(
        "[127.0.0.1]:{} {}\n",
        sshd.port,
        other.public_key().to_openssh().unwrap()
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(err, UpstreamError::HostKeyChanged { .. }),
        "{err:?}"
    );

    // @revoked wins over a listing
    let err = try_with(format!(
        "[127.0.0.1]:{p} {key_line}\n@revoked * {key_line}\n",
        p = sshd.port
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(err, UpstreamError::HostKeyUntrusted { .. }),
        "{err:?}"
    );

    // no file at all: fails closed
    let (tx, _rx) = mpsc::channel(8);
    let err = connect(
        &grant(&tgt, &user(USER)),
        &ca,
        &strict(&sshd.path("missing")),
        tx,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, UpstreamError::HostKeyUnverifiable { .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_accepts_a_host_certificate_from_a_listed_ca() {
    if !can_run_sshd() {
        return;
    }
    let ca = new_key();
    let host_ca = new_key();
    let host_key = new_key();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("hostkey-cert.pub");
    std::fs::write(
        &cert_path,
        host_certificate(&host_ca, host_key.public_key(), "127.0.0.1"),
    )
    .unwrap();
    let sshd = Sshd::start(
        ca.public_key(),
        &host_key,
        None,
        &format!("HostCertificate {}", cert_path.display()),
    );
    let tgt = target(&sshd);
    let kh = dir.path().join("known_hosts");
    let ca_line = host_ca.public_key().to_openssh().unwrap();

    std::fs::write(&kh, format!("@cert-authority [127.0.0.1]:* {ca_line}\n")).unwrap();
    let (tx, _rx) = mpsc::channel(8);
    let up = connect(&grant(&tgt, &user(USER)), &ca, &strict(&kh), tx).await;
    assert!(up.is_ok(), "{:?}", up.err());

    // a CA listed for other hosts only: the certificate does not count
    std::fs::write(&kh, format!("@cert-authority *.example.com {ca_line}\n")).unwrap();
    let (tx, _rx) = mpsc::channel(8);
    let err = connect(&grant(&tgt, &user(USER)), &ca, &strict(&kh), tx)
        .await
        .unwrap_err();
    assert!(
        matches!(err, UpstreamError::HostKeyUntrusted { .. }),
        "{err:?}"
    );

    // a certificate for another principal is not valid for this host
    std::fs::write(
        &cert_path,
        host_certificate(&host_ca, host_key.public_key(), "elsewhere.example.com"),
    )
    .unwrap();
    drop(sshd);
    let sshd = Sshd::start(
        ca.public_key(),
        &host_key,
        Some(tgt.address.rsplit(':').next().unwrap().parse().unwrap()),
        &format!("HostCertificate {}", cert_path.display()),
    );
    std::fs::write(&kh, format!("@cert-authority [127.0.0.1]:* {ca_line}\n")).unwrap();
    let (tx, _rx) = mpsc::channel(8);
    let err = connect(&grant(&target(&sshd), &user(USER)), &ca, &strict(&kh), tx)
        .await
        .unwrap_err();
    assert!(
        matches!(err, UpstreamError::HostKeyUntrusted { .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_is_reported_quickly() {
    let ca = new_key();
    let tgt = UpstreamTarget {
        route: "prod".into(),
        address: format!("127.0.0.1:{}", free_port()),
        failover: Vec::new(),
    };
    let (tx, _rx) = mpsc::channel(8);
    let started = Instant::now();
    let err = connect(
        &grant(&tgt, &user(USER)),
        &ca,
        &accept_new(memory_store()),
        tx,
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(err, UpstreamError::Unreachable { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("route \"prod\": upstream {} unreachable", tgt.address)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_login_and_expired_binding() {
    if !can_run_sshd() {
        return;
    }
    let ca = new_key();
    let sshd = Sshd::start(ca.public_key(), &new_key(), None, "");
    let check = accept_new(memory_store());
    let (tx, _rx) = mpsc::channel(8);
    let err = connect(&grant(&target(&sshd), &user("nosuchuser")), &ca, &check, tx)
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::AuthRefused { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "upstream refused the certificate for login \"nosuchuser\""
    );

    // a certificate from a CA sshd does not trust
    let (tx, _rx) = mpsc::channel(8);
    let err = connect(&grant(&target(&sshd), &user(USER)), &new_key(), &check, tx)
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::AuthRefused { .. }), "{err:?}");

    let (tx, _rx) = mpsc::channel(8);
    let expired = expiring_user(USER, tether_core::Timestamp(1_000));
    let err = connect(&grant(&target(&sshd), &expired), &ca, &check, tx)
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Certificate(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_forward_and_agent_channels_arrive_as_events() {
    if !can_run_sshd() {
        return;
    }
    let ca = new_key();
    let sshd = Sshd::start(ca.public_key(), &new_key(), None, "");
    let (tx, mut rx) = mpsc::channel(8);
    let up = connect(
        &grant(&target(&sshd), &user(USER)),
        &ca,
        &accept_new(memory_store()),
        tx,
    )
    .await
    .unwrap();

    // ssh -R: the upstream listens, a TCP client connects there
    let port = up.tcpip_forward("127.0.0.1", 0).await.unwrap();
    assert_ne!(port, 0);
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port as u16))
        .await
        .unwrap();
    tcp.write_all(b"hello through -R").await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let UpstreamEvent::ForwardedTcpip {
        channel,
        reply,
        connected_port,
        ..
    } = ev
    else {
        panic!("unexpected {ev:?}")
    };
    assert_eq!(connected_port, port);
    reply.accept().await;
    let (_ch, mut reader) = up.adopt(channel);
    let mut got = Vec::new();
    while got.len() < 16 {
        match tokio::time::timeout(Duration::from_secs(10), reader.wait())
            .await
            .unwrap()
        {
            Some(russh::ChannelMsg::Data { data }) => got.extend_from_slice(&data),
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(got, b"hello through -R");
    drop(tcp);
    up.cancel_tcpip_forward("127.0.0.1", port).await.unwrap();

    // ssh -A: after agent forwarding is accepted, ssh-add on the upstream opens an
    // agent channel towards us
    let (ch, mut session_reader) = up.open_session().await.unwrap();
    assert!(ch.agent_forward().await.unwrap());
    assert!(ch.exec(b"ssh-add -l").await.unwrap());
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let UpstreamEvent::AgentChannel { channel, reply } = ev else {
        panic!("unexpected {ev:?}")
    };
    reply.accept().await;
    let (agent, mut agent_reader) = up.adopt(channel);
    let mut data = Vec::new();
    while data.len() < 5 {
        match tokio::time::timeout(Duration::from_secs(10), agent_reader.wait())
            .await
            .unwrap()
        {
            Some(russh::ChannelMsg::Data { data: d }) => data.extend_from_slice(&d),
            Some(_) => {}
            None => break,
        }
    }
    // SSH_AGENTC_REQUEST_IDENTITIES (11), length-prefixed
    assert_eq!(&data[..], &[0, 0, 0, 1, 11]);
    // closing the agent channel ends ssh-add (no agent answer), and with it the session
    agent.close().await.unwrap();
    drop(agent_reader);
    let (_, _, status) = collect(&mut session_reader).await;
    assert!(matches!(status, Some(s) if s != 0), "{status:?}");

    // the upstream going away is an event too
    drop(sshd);
    up.disconnect("test over").await;
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap();
    assert!(
        matches!(ev, Some(UpstreamEvent::Disconnected { .. }) | None),
        "{ev:?}"
    );
}
