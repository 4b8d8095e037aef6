//! The real OpenSSH client (`/usr/bin/ssh`) as the benchmark's client: key files it
//! can use, its command lines, and byte-exact transfers through it.
//!
//! Transfers stream their bytes from and into this process (no shell): an upload
//! writes zeros into the client's stdin while the remote end counts them with
//! `wc -c`; a download counts what the client writes to its stdout while the remote
//! end runs `head -c N /dev/zero`. Either way exactly N bytes must arrive.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;

/// The OpenSSH client.
pub const SSH: &str = "/usr/bin/ssh";

/// Buffer size for streaming into and out of the client.
const CHUNK: usize = 1 << 20;

/// Writes `key` in OpenSSH format to `path`, mode 0600 (a new file).
pub fn write_private_key(path: &Path, key: &PrivateKey) -> Result<()> {
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("encoding a private key: {e}"))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(pem.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// `key`'s public half as one OpenSSH line (`ssh-ed25519 AAAA… comment`).
pub fn public_line(key: &PrivateKey) -> Result<String> {
    key.public_key()
        .to_openssh()
        .map_err(|e| anyhow::anyhow!("encoding a public key: {e}"))
}

/// A client key for the real `ssh`, and an `authorized_keys` file holding it that a
/// login user can read (sshd opens it with the user's uid): both in a temporary
/// directory of mode 0755, removed on drop.
pub struct ClientKey {
    pub key: PrivateKey,
    /// The private key file for `ssh -i`.
    pub path: PathBuf,
    /// For `AuthorizedKeysFile` in the sshd configs.
    pub authorized_keys: PathBuf,
    _dir: tempfile::TempDir,
}

impl ClientKey {
    /// Generates a fresh ed25519 key.
    pub fn generate() -> Result<ClientKey> {
        let dir = tempfile::Builder::new()
            .prefix("tether-bench-client-")
            .tempdir()
            .context("temporary key dir")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .context("chmod the key dir")?;
        let (mut key, _) = crate::sshc::new_key()?;
        key.set_comment("tether-bench client");
        let path = dir.path().join("id_ed25519");
        write_private_key(&path, &key)?;
        let authorized_keys = dir.path().join("authorized_keys");
        std::fs::write(&authorized_keys, format!("{}\n", public_line(&key)?))
            .context("writing authorized_keys")?;
        std::fs::set_permissions(&authorized_keys, std::fs::Permissions::from_mode(0o644))
            .context("chmod authorized_keys")?;
        Ok(ClientKey {
            key,
            path,
            authorized_keys,
            _dir: dir,
        })
    }
}

/// The options every `ssh` invocation gets: no user config, no agent, no known-hosts
/// bookkeeping, only this key, no compression, the given cipher, no prompts.
pub fn common_options(key: &Path, cipher: &str) -> Vec<String> {
    let mut args: Vec<String> = ["-F", "/dev/null"].map(String::from).to_vec();
    for opt in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "GlobalKnownHostsFile=/dev/null",
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "PasswordAuthentication=no",
        "Compression=no",
        "LogLevel=ERROR",
        "ConnectTimeout=20",
    ] {
        args.push("-o".into());
        args.push(opt.into());
    }
    args.extend([
        "-i".into(),
        key.display().to_string(),
        "-c".into(),
        cipher.into(),
        "-T".into(),
    ]);
    args
}

/// A `ProxyCommand` that reaches the target through an OpenSSH jump host at
/// `127.0.0.1:jump_port` (`ssh -W %h:%p`), with the same options — what
/// `ssh -J` does, except that `-J` would not pass `-i`/`-F`/`-c` on to the hop.
pub fn proxy_command(options: &[String], user: &str, jump_port: u16) -> String {
    let mut words = vec![SSH.to_string()];
    words.extend(options.iter().cloned());
    words.extend([
        "-W".into(),
        "%h:%p".into(),
        "-p".into(),
        jump_port.to_string(),
        format!("{user}@127.0.0.1"),
    ]);
    // Run by the user's shell: every word is a plain path or option (no spaces or
    // shell metacharacters) except `%h:%p`, which ssh expands first.
    words.join(" ")
}

/// Which way the bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → server (`… | ssh host 'wc -c'`).
    Up,
    /// Server → client (`ssh host 'head -c N /dev/zero' | …`).
    Down,
}

impl Direction {
    pub fn label(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }

    /// The remote command for `bytes` bytes this way.
    pub fn remote_command(self, bytes: u64) -> String {
        match self {
            Direction::Up => "wc -c".into(),
            Direction::Down => format!("head -c {bytes} /dev/zero"),
        }
    }
}

/// Kills and reaps the child when dropped (an error or a panic mid-transfer).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn read_all(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = r.read_to_end(&mut out);
        out
    })
}

/// Runs `ssh <args> <remote command>` moving `bytes` bytes `dir`, checks that exactly
/// that many arrived and the command succeeded, and returns the wall time from spawn
/// to exit (so it includes the connection set-up; see [`run_command`] for that
/// alone). Kills the client when `deadline` passes or `stop` is set.
pub fn transfer(
    args: &[String],
    dir: Direction,
    bytes: u64,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<Duration> {
    let mut cmd = Command::new(SSH);
    cmd.args(args)
        .arg(dir.remote_command(bytes))
        .stdin(match dir {
            Direction::Up => Stdio::piped(),
            Direction::Down => Stdio::null(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = ChildGuard(cmd.spawn().context("starting ssh")?);
    let stderr = read_all(child.0.stderr.take().context("stderr")?);
    let mut stdout = child.0.stdout.take().context("stdout")?;

    // Upload: a thread writes the zeros; the remote count comes back on stdout.
    // Download: a thread counts what arrives on stdout.
    let writer = match dir {
        Direction::Up => {
            let mut stdin = child.0.stdin.take().context("stdin")?;
            Some(std::thread::spawn(move || -> std::io::Result<()> {
                let buf = vec![0u8; CHUNK];
                let mut left = bytes;
                while left > 0 {
                    let n = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
                    stdin.write_all(&buf[..n])?;
                    left -= n as u64;
                }
                Ok(()) // dropping stdin sends EOF
            }))
        }
        Direction::Down => None,
    };
    let reader = std::thread::spawn(move || -> (u64, Vec<u8>) {
        let mut buf = vec![0u8; CHUNK];
        let (mut total, mut head) = (0u64, Vec::new());
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => return (total, head),
                Ok(n) => {
                    total += n as u64;
                    if head.len() < 256 {
                        head.extend_from_slice(&buf[..n.min(256)]);
                    }
                }
            }
        }
    });

    let status = loop {
        if let Some(status) = child.0.try_wait().context("waiting for ssh")? {
            break status;
        }
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if started.elapsed() > timeout {
            bail!("ssh did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let elapsed = started.elapsed();
    let (received, head) = reader.join().unwrap_or_default();
    let errors = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
    let wrote = writer.map(|w| w.join());
    ensure!(
        status.success(),
        "ssh exited with {status}; stderr: {}",
        errors.trim()
    );
    match dir {
        Direction::Up => {
            if let Some(Ok(Err(e))) = wrote {
                bail!("writing to ssh: {e}");
            }
            let counted = String::from_utf8_lossy(&head).trim().to_string();
            ensure!(
                counted == bytes.to_string(),
                "the remote end counted {counted:?} bytes, expected {bytes}"
            );
        }
        Direction::Down => ensure!(
            received == bytes,
            "received {received} bytes, expected {bytes}"
        ),
    }
    Ok(elapsed)
}

/// Runs `ssh <args> <remote>` to completion (e.g. `true`, to time the connection
/// set-up alone); returns its wall time.
pub fn run_command(args: &[String], remote: &str, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut child = ChildGuard(
        Command::new(SSH)
            .args(args)
            .arg(remote)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ssh")?,
    );
    let stderr = read_all(child.0.stderr.take().context("stderr")?);
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            bail!("ssh {remote} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let elapsed = started.elapsed();
    let errors = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
    ensure!(
        status.success(),
        "ssh {remote} exited with {status}; stderr: {}",
        errors.trim()
    );
    Ok(elapsed)
}

/// Runs `ssh <args> <remote>` (a command that prints something, e.g. `echo ok`) and
/// returns the time from spawn to the first byte on its stdout; the client must then
/// exit 0. Kills it after `timeout`. The error text is the client's stderr.
pub fn time_to_output(args: &[String], remote: &str, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut child = ChildGuard(
        Command::new(SSH)
            .args(args)
            .arg(remote)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ssh")?,
    );
    let stderr = read_all(child.0.stderr.take().context("stderr")?);
    let mut stdout = child.0.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut first = true;
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            if first {
                let _ = tx.send(Instant::now());
                first = false;
            }
        }
    });
    let first_output = rx.recv_timeout(timeout).ok();
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > timeout {
            break None;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let _ = child.0.kill();
    let _ = reader.join();
    let errors = String::from_utf8_lossy(&stderr.join().unwrap_or_default())
        .trim()
        .to_string();
    match (first_output, status) {
        (Some(at), Some(status)) if status.success() => Ok(at - started),
        (_, None) => bail!("no output within {timeout:?} ({errors})"),
        (_, Some(status)) => bail!("ssh exited with {status}: {errors}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        let opts = common_options(Path::new("/k/id"), "aes128-gcm@openssh.com");
        assert_eq!(&opts[..2], ["-F", "/dev/null"]);
        assert!(opts
            .windows(2)
            .any(|w| w == ["-c", "aes128-gcm@openssh.com"]));
        assert!(opts.windows(2).any(|w| w == ["-i", "/k/id"]));
        let pc = proxy_command(&opts, "u", 2200);
        assert!(pc.starts_with("/usr/bin/ssh -F /dev/null "));
        assert!(pc.ends_with(" -W %h:%p -p 2200 u@127.0.0.1"));
        assert_eq!(Direction::Up.remote_command(5), "wc -c");
        assert_eq!(Direction::Down.remote_command(5), "head -c 5 /dev/zero");
    }
}
