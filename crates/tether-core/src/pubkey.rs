//! An OpenSSH public key line as a person pastes it (`ssh-ed25519 AAAA… comment`,
//! the contents of `id_ed25519.pub`), checked far enough to bind it: a known key
//! algorithm, base64 that decodes, a wire blob that names the same algorithm, and
//! its fingerprint as `ssh-keygen -l` prints it. The key's own math is not checked
//! here: a binding only matches the fingerprint of a key that later proved itself
//! in SSH public-key authentication.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};

/// Longest line accepted (an RSA-16384 key is about 2.8 KB of base64).
pub const MAX_LINE: usize = 8 * 1024;

/// Key algorithms a binding may be for: the plain (not certificate) keys OpenSSH
/// clients authenticate with.
pub const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// A parsed public key line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKeyLine {
    /// The algorithm, e.g. `ssh-ed25519`.
    pub key_type: String,
    /// `TYPE BASE64`, without the comment.
    pub public_key: String,
    /// `SHA256:…` (unpadded base64 of the blob's SHA-256).
    pub fingerprint: String,
}

/// Parses one public key line; the error is one line for the person who pasted it.
pub fn parse_public_key(text: &str) -> Result<PublicKeyLine, String> {
    if text.len() > MAX_LINE {
        return Err(format!("the key is longer than {MAX_LINE} bytes"));
    }
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let line = lines.next().ok_or("no public key was given")?;
    if lines.next().is_some() {
        return Err("paste one public key (one line)".into());
    }
    if line.starts_with("-----BEGIN") {
        return Err("that is a private key; paste the public key (the .pub file)".into());
    }
    let mut parts = line.split_whitespace();
    let key_type = parts.next().unwrap_or_default();
    let data = parts.next().ok_or("expected \"TYPE BASE64 [comment]\"")?;
    if key_type.ends_with("-cert-v01@openssh.com") {
        return Err("that is a certificate; paste the public key itself".into());
    }
    if !KEY_TYPES.contains(&key_type) {
        return Err(format!(
            "unknown key type {:?}; expected one of {}",
            printable(key_type),
            KEY_TYPES.join(", ")
        ));
    }
    let blob = STANDARD
        .decode(data)
        .map_err(|_| "the key's base64 does not decode".to_string())?;
    match wire_string(&blob) {
        Some(named) if named == key_type.as_bytes() => {}
        _ => return Err(format!("the key data is not a {key_type} key")),
    }
    let digest = Sha256::digest(&blob);
    Ok(PublicKeyLine {
        key_type: key_type.to_string(),
        public_key: format!("{key_type} {data}"),
        fingerprint: format!("SHA256:{}", STANDARD_NO_PAD.encode(digest)),
    })
}

/// The first SSH wire string of `blob` (u32 big-endian length, then bytes).
fn wire_string(blob: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    blob.get(4..4usize.checked_add(len)?)
}

/// At most 40 characters, non-printable ones as `?`.
fn printable(s: &str) -> String {
    s.chars()
        .take(40)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // `ssh-keygen -t ed25519` output; `ssh-keygen -l` prints this fingerprint.
    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILCHye8ZYGfVmchfhZ4NkNHfZ/S1C8YmTpwp1OEnLQ44 alice@laptop";
    const ED25519_FP: &str = "SHA256:Hmeq9YSttz6i1Z0LMp74365gHP6oXZGCFOhL7qrk/fo";

    #[test]
    fn a_pasted_pub_file_gives_the_ssh_keygen_fingerprint() {
        let k = parse_public_key(&format!("\n  {ED25519}\n")).unwrap();
        assert_eq!(k.key_type, "ssh-ed25519");
        assert_eq!(
            k.public_key,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILCHye8ZYGfVmchfhZ4NkNHfZ/S1C8YmTpwp1OEnLQ44"
        );
        assert_eq!(k.fingerprint, ED25519_FP);
    }

    #[test]
    fn bad_lines_are_refused_with_one_line() {
        let cases = [
            ("", "no public key was given"),
            ("ssh-ed25519", "expected \"TYPE BASE64 [comment]\""),
            ("ssh-dss AAAA", "unknown key type \"ssh-dss\""),
            ("ssh-ed25519 !!!", "the key's base64 does not decode"),
            (
                "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAILCHye8ZYGfVmchfhZ4NkNHfZ/S1C8YmTpwp1OEnLQ44",
                "the key data is not a ssh-rsa key",
            ),
            ("ssh-ed25519 AAAA", "the key data is not a ssh-ed25519 key"),
            (
                "ssh-ed25519-cert-v01@openssh.com AAAA",
                "that is a certificate",
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n",
                "paste one public key",
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----",
                "that is a private key",
            ),
            (
                &format!("{ED25519}\n{ED25519}"),
                "paste one public key (one line)",
            ),
        ];
        for (input, want) in cases {
            let e = parse_public_key(input).unwrap_err();
            assert!(e.starts_with(want), "{input:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let long = format!("ssh-ed25519 {}", "A".repeat(MAX_LINE));
        assert!(parse_public_key(&long).unwrap_err().contains("longer than"));
    }
}
