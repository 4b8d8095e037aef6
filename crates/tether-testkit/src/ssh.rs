//! The real OpenSSH client (`/usr/bin/ssh`) and `ssh-keygen`, as a test drives them:
//! under a pseudo-terminal (util-linux `script`) or with plain pipes, output read
//! incrementally by background threads.

use crate::process::{
    exit_code, pump_tee, run_command, spawn_group, terminate, text, wait_timeout, SharedBuf,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The OpenSSH client.
pub const SSH: &str = "/usr/bin/ssh";

/// Options put before every test's own `ssh` arguments: no user config, no
/// known_hosts, no agent, only the keys given with `-i`.
pub const SSH_DEFAULT_ARGS: [&str; 10] = [
    "-F",
    "/dev/null",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "IdentityAgent=none",
];

/// Quotes `s` for a POSIX shell (single quotes).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A running client process (normally `ssh`) whose output is collected as it arrives.
/// Killed (its whole process group) on drop.
pub struct SshClient {
    child: Child,
    stdin: Option<ChildStdin>,
    output: SharedBuf,
    stdout: SharedBuf,
    stderr: SharedBuf,
    status: Option<i32>,
}

impl SshClient {
    /// `ssh <SSH_DEFAULT_ARGS> <args>` under a pseudo-terminal (200×50). Everything it
    /// prints arrives in [`SshClient::output`]; input goes through [`SshClient::send`].
    pub fn spawn(args: &[&str]) -> SshClient {
        SshClient::spawn_program(SSH, &with_defaults(args), true)
    }

    /// `ssh <SSH_DEFAULT_ARGS> <args>` with pipes instead of a terminal: stdout and
    /// stderr are kept apart (and also merged in [`SshClient::output`]).
    pub fn spawn_piped(args: &[&str]) -> SshClient {
        SshClient::spawn_program(SSH, &with_defaults(args), false)
    }

    /// Any program (plink, dbclient, scp, sftp, …) without the default ssh options,
    /// under a pseudo-terminal when `pty`.
    pub fn spawn_program(program: &str, args: &[&str], pty: bool) -> SshClient {
        let mut cmd = if pty {
            let mut line = String::from("stty cols 200 rows 50 2>/dev/null; exec");
            for word in std::iter::once(program).chain(args.iter().copied()) {
                line.push(' ');
                line.push_str(&shell_quote(word));
            }
            let mut cmd = Command::new("script");
            cmd.args(["-qfec", &line, "/dev/null"]);
            cmd
        } else {
            let mut cmd = Command::new(program);
            cmd.args(args);
            cmd
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_group(&mut cmd, program);
        let output: SharedBuf = Arc::default();
        let stdout: SharedBuf = Arc::default();
        let stderr: SharedBuf = Arc::default();
        pump_tee(child.stdout.take().unwrap(), stdout.clone(), output.clone());
        pump_tee(child.stderr.take().unwrap(), stderr.clone(), output.clone());
        SshClient {
            stdin: child.stdin.take(),
            child,
            output,
            stdout,
            stderr,
            status: None,
        }
    }

    /// Everything printed so far (stdout and stderr interleaved as they arrived),
    /// with carriage returns removed.
    pub fn output(&self) -> String {
        text(&self.output).replace('\r', "")
    }

    /// Standard output so far (under a pty: everything the terminal showed).
    pub fn stdout(&self) -> String {
        text(&self.stdout).replace('\r', "")
    }

    /// Standard error so far (under a pty: only the wrapper's own errors).
    pub fn stderr(&self) -> String {
        text(&self.stderr).replace('\r', "")
    }

    /// Waits until [`SshClient::output`] contains `needle`; `false` after `timeout`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        crate::wait_until(timeout, || self.output().contains(needle))
    }

    /// Waits for a sign-in URL (see [`extract_url`]) in the output.
    pub fn wait_for_url(&self, timeout: Duration) -> Option<String> {
        let mut url = None;
        crate::wait_until(timeout, || {
            url = extract_url(&self.output());
            url.is_some()
        });
        url
    }

    /// Writes `input` to the client's stdin (under a pty, as if typed).
    pub fn send(&mut self, input: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin.write_all(input.as_bytes()).expect("write to client");
        stdin.flush().expect("flush client stdin");
    }

    /// Closes stdin (EOF for a piped client).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits up to `timeout` for the client to exit: `Some(exit code)` (`128 + N` when
    /// killed by signal N), `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        if self.status.is_none() {
            self.status = wait_timeout(&mut self.child, timeout).map(exit_code);
            if self.status.is_some() {
                // Let the reader threads drain what the process wrote last.
                let deadline = Instant::now() + Duration::from_millis(200);
                let mut len = 0;
                while Instant::now() < deadline {
                    let now = self.output.lock().unwrap().len();
                    if now == len && now > 0 {
                        break;
                    }
                    len = now;
                    std::thread::sleep(Duration::from_millis(30));
                }
            }
        }
        self.status
    }

    /// Whether the client is still running.
    pub fn is_running(&mut self) -> bool {
        self.wait_exit(Duration::ZERO).is_none()
    }

    /// The process id (of the `script` wrapper under a pty).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the client now (SIGTERM, then SIGKILL after 2 s); returns its exit code.
    pub fn kill(&mut self) -> Option<i32> {
        if self.status.is_none() {
            self.status = terminate(&mut self.child, Duration::from_secs(2));
        }
        self.status
    }
}

impl Drop for SshClient {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- ssh client output ---\n{}", self.output());
        }
        self.stdin = None;
        terminate(&mut self.child, Duration::from_secs(2));
    }
}

fn with_defaults<'a>(args: &[&'a str]) -> Vec<&'a str> {
    SSH_DEFAULT_ARGS
        .iter()
        .copied()
        .chain(args.iter().copied())
        .collect()
}

/// Runs `ssh <SSH_DEFAULT_ARGS> <args>` without a terminal, stdin from /dev/null:
/// `(exit code or None on timeout, stdout, stderr)`.
pub fn run_ssh(args: &[&str], timeout: Duration) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(SSH);
    cmd.args(with_defaults(args));
    let out = run_command(cmd, None, timeout);
    (out.status, out.stdout, out.stderr)
}

/// Generates an unencrypted ed25519 key pair `<dir>/<name>` and `<dir>/<name>.pub`;
/// returns the private key path.
pub fn gen_client_key(dir: &Path, name: &str) -> PathBuf {
    gen_key(dir, name, "ed25519")
}

/// Like [`gen_client_key`] for another type (`rsa`, `ecdsa`, `ed25519`).
pub fn gen_key(dir: &Path, name: &str, key_type: &str) -> PathBuf {
    let path = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-t", key_type, "-N", "", "-q", "-C", name, "-f"])
        .arg(&path);
    let out = run_command(cmd, None, Duration::from_secs(60));
    assert!(out.success(), "ssh-keygen -t {key_type} {name}: {out:?}");
    path
}

/// The `SHA256:…` fingerprint of a key file, as `ssh-keygen -l -f` prints it.
pub fn fingerprint(key_path: &Path) -> String {
    let mut cmd = Command::new("ssh-keygen");
    cmd.arg("-l").arg("-f").arg(key_path);
    let out = run_command(cmd, None, Duration::from_secs(30));
    assert!(
        out.success(),
        "ssh-keygen -l -f {}: {out:?}",
        key_path.display()
    );
    out.stdout
        .split_whitespace()
        .find(|t| t.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("no SHA256 fingerprint in {:?}", out.stdout))
        .to_string()
}

/// Signs `pub_key` with the CA private key `ca_key` as an OpenSSH user certificate
/// (key id `key_id`, the given principals, valid for an hour); returns the
/// `…-cert.pub` path ssh picks up next to the private key.
pub fn sign_user_cert(ca_key: &Path, pub_key: &Path, key_id: &str, principals: &[&str]) -> PathBuf {
    let mut cmd = Command::new("ssh-keygen");
    cmd.arg("-s")
        .arg(ca_key)
        .args([
            "-I",
            key_id,
            "-n",
            &principals.join(","),
            "-V",
            "-5m:+1h",
            "-q",
        ])
        .arg(pub_key);
    let out = run_command(cmd, None, Duration::from_secs(30));
    assert!(out.success(), "ssh-keygen -s: {out:?}");
    let name = pub_key.to_string_lossy();
    PathBuf::from(format!(
        "{}-cert.pub",
        name.strip_suffix(".pub").unwrap_or(&name)
    ))
}

/// The first tether sign-in URL in `output`:
/// `http(s)://…/.pomerium/sign_in?user_code=<code>` (the code is base64url).
pub fn extract_url(output: &str) -> Option<String> {
    const MARK: &str = "/.pomerium/sign_in?user_code=";
    let mut rest = output;
    while let Some(i) = rest.find("http") {
        let cand = &rest[i..];
        let end = cand
            .find(|c: char| c.is_whitespace() || c.is_control())
            .unwrap_or(cand.len());
        let word = &cand[..end];
        if word.starts_with("http://") || word.starts_with("https://") {
            if let Some(m) = word.find(MARK) {
                let code_start = m + MARK.len();
                let code_len = word[code_start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                    .unwrap_or(word.len() - code_start);
                if code_len > 0 {
                    return Some(word[..code_start + code_len].to_string());
                }
            }
        }
        rest = &cand[4..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_url_finds_the_sign_in_link() {
        let out = "Please sign in to continue\r\nhttp://127.0.0.1:8080/.pomerium/sign_in?user_code=C6I3E-wUa1ne_TVtrORlQw\r\n";
        assert_eq!(
            extract_url(out).as_deref(),
            Some("http://127.0.0.1:8080/.pomerium/sign_in?user_code=C6I3E-wUa1ne_TVtrORlQw")
        );
        let ansi = "see https://auth.example.com/.pomerium/sign_in?user_code=abc\x1b[0m.";
        assert_eq!(
            extract_url(ansi).as_deref(),
            Some("https://auth.example.com/.pomerium/sign_in?user_code=abc")
        );
        assert_eq!(extract_url("http://x/ no link https://y/other"), None);
        assert_eq!(
            extract_url("http://x/.pomerium/sign_in?user_code="),
            None,
            "empty code"
        );
    }

    #[test]
    fn shell_quote_round_trips() {
        assert_eq!(shell_quote("alice@prod"), "alice@prod");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn keys_and_fingerprints() {
        let dir = tempfile::tempdir().unwrap();
        let key = gen_client_key(dir.path(), "id_test");
        assert!(key.is_file());
        let fp = fingerprint(&dir.path().join("id_test.pub"));
        assert!(fp.starts_with("SHA256:") && fp.len() == 50, "{fp}");
        assert_eq!(fp, fingerprint(&key));
    }

    #[test]
    fn pty_client_reads_incrementally_and_reports_exit() {
        let mut c = SshClient::spawn_program(
            "sh",
            &[
                "-c",
                "if [ -t 0 ]; then echo tty; fi; read x; echo got:$x; exit 7",
            ],
            true,
        );
        assert!(c.wait_for("tty", Duration::from_secs(10)), "{}", c.output());
        c.send("hello\n");
        assert!(
            c.wait_for("got:hello", Duration::from_secs(10)),
            "{}",
            c.output()
        );
        assert_eq!(c.wait_exit(Duration::from_secs(10)), Some(7));
    }

    #[test]
    fn piped_client_keeps_streams_apart() {
        let mut c = SshClient::spawn_program("sh", &["-c", "echo out; echo err >&2"], false);
        assert_eq!(c.wait_exit(Duration::from_secs(10)), Some(0));
        assert_eq!(c.stdout(), "out\n");
        assert_eq!(c.stderr(), "err\n");
        assert!(c.output().contains("out") && c.output().contains("err"));
    }

    #[test]
    fn ssh_version_runs() {
        let (status, _out, err) = run_ssh(&["-V"], Duration::from_secs(10));
        assert_eq!(status, Some(0));
        assert!(err.contains("OpenSSH"), "{err}");
    }
}
