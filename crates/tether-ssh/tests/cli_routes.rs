//! The internal CLI's `routes` and `portal` without a terminal, with the real
//! OpenSSH client: which routes are listed (policy decides, login rules do not) and
//! the ssh command for each; `portal` disabled, without a TTY, with no routes; a
//! shell request with a terminal starting the portal.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod route_support;
mod upstream_support;

use std::time::Duration;

use common::*;
use route_support::{config_with, route};
use tether_core::config::Config;
use tether_core::policy::Criterion;

const T: Duration = Duration::from_secs(20);

fn batch() -> &'static [&'static str] {
    &["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
}

/// Routes to nowhere (listing and refusals never connect upstream).
fn config(portal: bool, routes: Vec<tether_core::config::Route>) -> Config {
    let mut c = config_with(routes);
    c.runtime_flags.ssh_routes_portal = portal;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_lists_exactly_the_allowed_routes_with_their_ssh_commands() {
    // The signed-in user is in groups sre and dev (common::session_for).
    let gw = start_config(config(
        false,
        vec![
            route("prod", "127.0.0.1:1", None, true),
            route(
                "admin",
                "127.0.0.1:1",
                Some(vec![Criterion::Groups(vec!["admins".into()])]),
                false,
            ),
            route(
                "staging",
                "127.0.0.1:1",
                Some(vec![Criterion::Groups(vec!["sre".into()])]),
                false,
            ),
            // Login rules do not hide a route (the login is the user's choice).
            route(
                "mine",
                "127.0.0.1:1",
                Some(vec![Criterion::SshUsernameMatchesEmail]),
                false,
            ),
            route("closed", "127.0.0.1:1", None, false),
        ],
    ))
    .await;
    let key = keygen();
    sign_in(&gw, &key, "alice@example.com").await;
    let port = gw.addr.port();

    let done = ssh(&gw, &key, "alice", batch(), Some("routes"))
        .finish(T)
        .await;
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    assert_eq!(
        done.stdout,
        format!(
            "prod     ssh -p {port} alice@prod@auth.example.com\n\
             staging  ssh -p {port} alice@staging@auth.example.com\n\
             mine     ssh -p {port} alice@mine@auth.example.com\n"
        )
    );
    assert_eq!(done.stderr, "");

    // The command carries the login the user connected with; a terminal gets CR LF.
    let done = ssh(
        &gw,
        &key,
        "bob",
        &[batch(), &["-tt"]].concat(),
        Some("routes"),
    )
    .finish(T)
    .await;
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    assert!(
        done.stdout.starts_with(&format!(
            "prod     ssh -p {port} bob@prod@auth.example.com\r\n"
        )),
        "{:?}",
        done.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_portal_with_no_route_allowed() {
    let gw = start_config(config(
        true,
        vec![route(
            "admin",
            "127.0.0.1:1",
            Some(vec![Criterion::Groups(vec!["admins".into()])]),
            false,
        )],
    ))
    .await;
    let key = keygen();
    sign_in(&gw, &key, "alice@example.com").await;

    let done = ssh(&gw, &key, "alice", batch(), Some("routes"))
        .finish(T)
        .await;
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    assert_eq!(done.stdout, "no routes available to you\n");

    let done = ssh(
        &gw,
        &key,
        "alice",
        &[batch(), &["-tt"]].concat(),
        Some("portal"),
    )
    .finish(T)
    .await;
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(
        done.stderr.contains("no routes available to you"),
        "{:?}",
        done.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_refused_when_disabled_or_without_a_tty() {
    let routes = || vec![route("prod", "127.0.0.1:1", None, true)];
    let off = start_config(config(false, routes())).await;
    let key = keygen();
    sign_in(&off, &key, "alice@example.com").await;
    let done = ssh(
        &off,
        &key,
        "alice",
        &[batch(), &["-T"]].concat(),
        Some("portal"),
    )
    .finish(T)
    .await;
    assert_eq!(done.status.code(), Some(1));
    assert_eq!(done.stderr, "'portal' is not enabled on this gateway\n");
    // Even with a terminal.
    let done = ssh(
        &off,
        &key,
        "alice",
        &[batch(), &["-tt"]].concat(),
        Some("portal"),
    )
    .finish(T)
    .await;
    assert_eq!(done.status.code(), Some(1));
    assert!(
        done.stderr
            .contains("'portal' is not enabled on this gateway"),
        "{:?}",
        done.stderr
    );

    let on = start_config(config(true, routes())).await;
    let key = keygen();
    sign_in(&on, &key, "alice@example.com").await;
    let done = ssh(
        &on,
        &key,
        "alice",
        &[batch(), &["-T"]].concat(),
        Some("portal"),
    )
    .finish(T)
    .await;
    assert_eq!(done.status.code(), Some(1));
    assert_eq!(
        done.stderr,
        "'portal' is an interactive command and requires a TTY (try passing '-t' to ssh)\n"
    );
    assert_eq!(done.stdout, "");
    // No command and no terminal: help, as without a portal.
    let done = ssh(&on, &key, "alice", &[batch(), &["-T"]].concat(), None)
        .finish(T)
        .await;
    assert_eq!(done.status.code(), Some(1));
    assert!(done.stdout.contains("Usage:"), "{}", done.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_with_a_terminal_runs_the_portal() {
    let gw = start_config(config(true, vec![route("prod", "127.0.0.1:1", None, true)])).await;
    let key = keygen();
    sign_in(&gw, &key, "alice@example.com").await;
    // No command, a terminal, stdin at EOF at once: the portal starts and ends
    // without a choice.
    let done = ssh(&gw, &key, "alice", &[batch(), &["-tt"]].concat(), None)
        .finish(T)
        .await;
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    assert!(
        done.stdout.contains("no route chosen\r\n"),
        "{:?}",
        done.stdout
    );
    assert!(!done.stdout.contains("Usage:"), "{:?}", done.stdout);
}
