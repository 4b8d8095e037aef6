//! Key material for the running gateway: SSH host keys, the user CA key, the cookie
//! secret and the IdP client secret. Configured files are read (and refused when
//! group/world can read them); missing ones are generated into the data directory
//! with mode 0600 on first run, into a data directory created 0700 (and refused
//! when another user could open it, `perms`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;
use tether_core::config::{Config, StorageType};
use tether_core::Secret;

/// Everything secret the gateway needs, loaded or generated.
pub struct KeyMaterial {
    /// SSH host keys, one per algorithm.
    pub host_keys: Vec<PrivateKey>,
    /// The user CA that signs upstream certificates.
    pub user_ca: PrivateKey,
    /// Decoded cookie secret.
    pub cookie_key: Secret<[u8; 32]>,
    /// Where the CA's public key was written (for TrustedUserCAKeys).
    pub user_ca_pub_path: Option<PathBuf>,
}

/// The data directory: `data_dir`, else `$TETHER_DATA_DIR`, else `./data`.
pub fn data_dir(config: &Config) -> PathBuf {
    if let Some(d) = &config.data_dir {
        return PathBuf::from(d);
    }
    match std::env::var_os("TETHER_DATA_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("./data"),
    }
}

/// Creates the data directory (mode 0700; missing parents as the umask says) if
/// needed, and refuses one another local user could open (`perms`).
pub fn ensure_data_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        }
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create data directory {}", dir.display()))
            }
        }
    }
    crate::perms::check_data_dir(dir).map_err(anyhow::Error::msg)
}

/// Whether the config leaves something to the data directory: a generated host key,
/// user CA or cookie secret, or the SQLite database.
pub fn needs_data_dir(config: &Config) -> bool {
    (config.ssh_host_key_files.is_empty() && config.ssh_host_keys.is_empty())
        || (config.storage_type == StorageType::File && config.storage_connection_string.is_none())
        || (config.ssh_user_ca_key.is_none() && config.ssh_user_ca_key_file.is_none())
        || (config.cookie_secret.is_none() && config.cookie_secret_file.is_none())
}

/// Reads a secret file, refusing group/world permission bits.
pub fn read_private_file(path: &Path) -> Result<String> {
    let meta = fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "{}: permissions are too open ({:04o}); run chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))
}

fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| anyhow::anyhow!("OS random source failed: {e}"))?;
    Ok(b)
}

/// A fresh ed25519 key from the OS CSPRNG.
pub fn generate_ed25519(comment: &str) -> Result<PrivateKey> {
    let seed = random_bytes::<32>()?;
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment(comment);
    Ok(key)
}

fn parse_key(text: &str, what: &str) -> Result<PrivateKey> {
    PrivateKey::from_openssh(text.trim_start())
        .map_err(|e| anyhow::anyhow!("{what}: not an OpenSSH private key ({e})"))
}

/// Parses the keys given inline (`ssh_host_keys`, `ssh_user_ca_key`) without
/// touching the disk, so `tether check` reports a broken PEM as `serve` would.
pub fn check_inline(config: &Config) -> Result<()> {
    for (i, pem) in config.ssh_host_keys.iter().enumerate() {
        parse_key(pem.expose(), &format!("ssh_host_keys[{i}]"))?;
    }
    if let Some(pem) = &config.ssh_user_ca_key {
        parse_key(pem.expose(), "ssh_user_ca_key")?;
    }
    Ok(())
}

/// Loads a key file, or generates it at `path` when absent.
fn load_or_generate(path: &Path, comment: &str) -> Result<PrivateKey> {
    if path.exists() {
        return parse_key(&read_private_file(path)?, &path.display().to_string());
    }
    let key = generate_ed25519(comment)?;
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("cannot encode key: {e}"))?;
    write_private_file(path, pem.as_bytes())?;
    tracing::info!(path = %path.display(), "generated {comment}");
    Ok(key)
}

/// Loads or generates everything secret per the config.
pub fn load(config: &Config, data: &Path) -> Result<KeyMaterial> {
    let mut host_keys = Vec::new();
    for file in &config.ssh_host_key_files {
        let path = Path::new(file);
        host_keys.push(parse_key(&read_private_file(path)?, file)?);
    }
    for (i, pem) in config.ssh_host_keys.iter().enumerate() {
        host_keys.push(parse_key(pem.expose(), &format!("ssh_host_keys[{i}]"))?);
    }
    if needs_data_dir(config) {
        ensure_data_dir(data)?;
    }
    if host_keys.is_empty() {
        host_keys.push(load_or_generate(
            &data.join("ssh_host_ed25519_key"),
            "tether host key",
        )?);
    }

    let (user_ca, ca_path) = if let Some(pem) = &config.ssh_user_ca_key {
        (parse_key(pem.expose(), "ssh_user_ca_key")?, None)
    } else if let Some(file) = &config.ssh_user_ca_key_file {
        (parse_key(&read_private_file(Path::new(file))?, file)?, None)
    } else {
        let path = data.join("ssh_user_ca_key");
        (load_or_generate(&path, "tether user CA")?, Some(path))
    };
    let user_ca_pub_path = match ca_path {
        Some(p) => {
            let pub_path = p.with_extension("pub");
            let line = user_ca
                .public_key()
                .to_openssh()
                .map_err(|e| anyhow::anyhow!("cannot encode CA public key: {e}"))?;
            fs::write(&pub_path, format!("{line}\n"))
                .with_context(|| format!("cannot write {}", pub_path.display()))?;
            Some(pub_path)
        }
        None => None,
    };

    let cookie_text = if let Some(s) = &config.cookie_secret {
        s.expose().clone()
    } else if let Some(file) = &config.cookie_secret_file {
        read_private_file(Path::new(file))?
    } else {
        let path = data.join("cookie_secret");
        if path.exists() {
            read_private_file(&path)?
        } else {
            let text = STANDARD.encode(random_bytes::<32>()?);
            write_private_file(&path, text.as_bytes())?;
            text
        }
    };
    let decoded = STANDARD
        .decode(cookie_text.trim())
        .map_err(|_| anyhow::anyhow!("cookie secret: expected base64 of 32 bytes"))?;
    let cookie_key: [u8; 32] = decoded
        .try_into()
        .map_err(|_| anyhow::anyhow!("cookie secret: expected base64 of 32 bytes"))?;

    // The web app reads the client secret itself; check the file here so a missing or
    // too-open file stops start-up before any port is bound.
    match (&config.idp.client_secret, &config.idp.client_secret_file) {
        (Some(_), _) => {}
        (None, Some(file)) => {
            read_private_file(Path::new(file))?;
        }
        (None, None) => bail!("idp_client_secret is required"),
    }

    Ok(KeyMaterial {
        host_keys,
        user_ca,
        cookie_key: Secret::new(cookie_key),
        user_ca_pub_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_are_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let a = load_or_generate(&path, "t").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_generate(&path, "t").unwrap();
        assert_eq!(a.public_key(), b.public_key());
    }

    #[test]
    fn too_open_key_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        load_or_generate(&path, "t").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_private_file(&path).unwrap_err().to_string();
        assert!(err.contains("permissions are too open"), "{err}");
    }
}
