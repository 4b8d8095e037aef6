//! Bulk transfers through a route with the real tools: scp (SFTP and legacy
//! protocol) of a 50 MiB random file up and down, sftp ls/put/get, and rsync over
//! ssh — flow control end to end, nothing lost or reordered.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod route_support;
mod upstream_support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;
use route_support::*;
use upstream_support::{can_run_sshd, USER};

const BIG: Duration = Duration::from_secs(180);

fn random_file(path: &Path, mib: usize) {
    let st = std::process::Command::new("head")
        .args(["-c", &format!("{}", mib * 1024 * 1024), "/dev/urandom"])
        .stdout(std::fs::File::create(path).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
}

async fn run(cmd: &mut tokio::process::Command) -> Output {
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(BIG, cmd.output())
        .await
        .expect("tool hung")
        .unwrap();
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd.as_std().get_program(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

async fn setup() -> (Rig, ClientKey) {
    let rig = rig("", |addr| vec![route("prod", addr, None, true)]).await;
    let key = keygen();
    sign_in(&rig.gw, &key, "alice@example.com").await;
    (rig, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_50_mib_up_and_down() {
    if !can_run_sshd() {
        return;
    }
    let (rig, key) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    random_file(&src, 50);
    let remote = remote_tmp("scp");
    let port = rig.gw.addr.port().to_string();
    let dest = format!("{USER}@prod@127.0.0.1:{remote}");

    // scp as users type it (SFTP protocol by default).
    run(tokio::process::Command::new("scp")
        .args(client_opts(&key))
        .args(["-P", &port])
        .arg(&src)
        .arg(&dest))
    .await;
    let back = dir.path().join("back.bin");
    run(tokio::process::Command::new("scp")
        .args(client_opts(&key))
        .args(["-P", &port])
        .arg(&dest)
        .arg(&back))
    .await;
    assert_eq!(sha256(&src), sha256(&back));

    // The legacy protocol runs `scp -t` / `scp -f` over exec.
    let legacy = dir.path().join("legacy.bin");
    run(tokio::process::Command::new("scp")
        .args(client_opts(&key))
        .args(["-O", "-P", &port])
        .arg(&dest)
        .arg(&legacy))
    .await;
    assert_eq!(sha256(&src), sha256(&legacy));

    let done = ssh_batch(
        &rig.gw,
        &key,
        &format!("{USER}@prod"),
        &[],
        Some(&format!("sha256sum {remote}; rm -f {remote}")),
    )
    .await;
    assert!(done.stdout.starts_with(&sha256(&src)), "{}", done.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_ls_put_get() {
    if !can_run_sshd() {
        return;
    }
    let (rig, key) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("put.bin");
    random_file(&src, 3);
    let back = dir.path().join("got.bin");
    let remote_dir = remote_tmp("sftp");
    let batch = dir.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "mkdir {remote_dir}\ncd {remote_dir}\nput {} data.bin\nls -l\nget data.bin {}\nrm data.bin\ncd /\nrmdir {remote_dir}\n",
            src.display(),
            back.display()
        ),
    )
    .unwrap();
    let out = run(tokio::process::Command::new("sftp")
        .args(client_opts(&key))
        .args(["-P", &rig.gw.addr.port().to_string(), "-b"])
        .arg(&batch)
        .arg(format!("{USER}@prod@127.0.0.1")))
    .await;
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("data.bin"), "{listing}");
    assert!(listing.contains("3145728"), "{listing}");
    assert_eq!(sha256(&src), sha256(&back));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsync_over_ssh_both_ways() {
    if !can_run_sshd() {
        return;
    }
    let (rig, key) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    random_file(&tree.join("a.bin"), 4);
    std::fs::write(tree.join("sub/b.txt"), "hello rsync\n").unwrap();
    let remote = remote_tmp("rsync");
    let rsh = format!(
        "ssh {} -p {}",
        client_opts(&key).join(" "),
        rig.gw.addr.port()
    );
    run(tokio::process::Command::new("rsync")
        .args(["-a", "-e", &rsh])
        .arg(format!("{}/", tree.display()))
        .arg(format!("{USER}@prod@127.0.0.1:{remote}/")))
    .await;
    let back = dir.path().join("back");
    run(tokio::process::Command::new("rsync")
        .args(["-a", "-e", &rsh])
        .arg(format!("{USER}@prod@127.0.0.1:{remote}/"))
        .arg(format!("{}/", back.display())))
    .await;
    assert_eq!(sha256(&tree.join("a.bin")), sha256(&back.join("a.bin")));
    assert_eq!(
        std::fs::read_to_string(back.join("sub/b.txt")).unwrap(),
        "hello rsync\n"
    );
    let _ = ssh_batch(
        &rig.gw,
        &key,
        &format!("{USER}@prod"),
        &[],
        Some(&format!("rm -rf {remote}")),
    )
    .await;
}
