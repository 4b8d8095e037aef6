//! Who else can read what tether keeps secret (issue 12): the data directory
//! (generated keys, the cookie secret, the SQLite database) and a config file that
//! holds secrets inline. Both are refused at start-up, with one line and exit 2,
//! when another local user could read them — fail closed, as for key files.
//!
//! "Another user could read it" is decided the way the kernel would: the path grants
//! group or others some access (mode & 0o077) **and** every directory above it lets
//! someone other than its owner through (`x` for group or others), unless that
//! directory belongs to the same user or root and is closed (so `data/` 0755 inside a
//! 0700 directory is private; `/var/lib/tether` 0755 is not).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use tether_core::config::{Config, Parsed};

/// The permission bits of `path` when another local user could reach and open it,
/// else `None` (also when it does not exist).
pub fn exposed_mode(path: &Path) -> std::io::Result<Option<u32>> {
    let real = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = fs::metadata(&real)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    for dir in real.ancestors().skip(1) {
        let m = fs::metadata(dir)?;
        let closed = m.permissions().mode() & 0o011 == 0;
        if closed && (m.uid() == meta.uid() || m.uid() == 0) {
            return Ok(None);
        }
    }
    Ok(Some(mode))
}

/// Refuses a data directory another user could list or read (one line).
pub fn check_data_dir(dir: &Path) -> Result<(), String> {
    match exposed_mode(dir) {
        Ok(None) => Ok(()),
        Ok(Some(mode)) => Err(format!(
            "data_dir {d}: group or others can open it (mode {mode:04o}) and it holds keys, \
             the cookie secret and the database; run chmod 700 {d}",
            d = dir.display()
        )),
        Err(e) => Err(format!("data_dir {}: cannot inspect: {e}", dir.display())),
    }
}

/// The keys whose secret value `config` holds inline (not in a `*_file`).
pub fn inline_secrets(config: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if config.cookie_secret.is_some() {
        keys.push("cookie_secret");
    }
    if config.idp.client_secret.is_some() {
        keys.push("idp_client_secret");
    }
    if !config.ssh_host_keys.is_empty() {
        keys.push("ssh_host_keys");
    }
    if config.ssh_user_ca_key.is_some() {
        keys.push("ssh_user_ca_key");
    }
    if config.metrics_basic_auth.is_some() {
        keys.push("metrics_basic_auth");
    }
    if config
        .storage_connection_string
        .as_ref()
        .is_some_and(|c| has_password(c.expose()))
    {
        keys.push("databroker_storage_connection_string");
    }
    if !config.dev_idp_users.is_empty() {
        keys.push("dev_idp");
    }
    keys
}

/// A PostgreSQL URL or keyword string with a password in it
/// (`postgres://user:pw@host/db`, `?password=`, `password=…`).
fn has_password(conn: &str) -> bool {
    let lower = conn.to_ascii_lowercase();
    if lower.contains("password=") {
        return true;
    }
    let Some((_, rest)) = conn.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// Refuses a config file that holds secrets inline when another user could read it.
/// Secrets set by an environment variable or read from a `*_file` are not in it.
pub fn check_config_file(path: &Path, parsed: &Parsed) -> Result<(), String> {
    let mut secrets = inline_secrets(&parsed.config);
    secrets.retain(|key| parsed.in_file(key));
    if secrets.is_empty() {
        return Ok(());
    }
    match exposed_mode(path) {
        Ok(None) => Ok(()),
        Ok(Some(mode)) => Err(format!(
            "{p}: holds secrets inline ({}) and group or others can read it (mode {mode:04o}); \
             run chmod 600 {p}, or move them to the *_file keys",
            secrets.join(", "),
            p = path.display()
        )),
        Err(e) => Err(format!("{}: cannot inspect: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn exposure_follows_the_parents() {
        let top = tempfile::tempdir().unwrap();
        let data = top.path().join("data");
        fs::create_dir(&data).unwrap();
        set(&data, 0o755);
        set(top.path(), 0o700);
        assert_eq!(exposed_mode(&data).unwrap(), None, "closed parent");
        set(top.path(), 0o755);
        // Only when every directory up to / lets others through (not so for a
        // 0700 /tmp or home above the temp dir).
        let open_above = top
            .path()
            .ancestors()
            .skip(1)
            .all(|d| fs::metadata(d).unwrap().permissions().mode() & 0o011 != 0);
        if open_above {
            assert_eq!(exposed_mode(&data).unwrap(), Some(0o755));
            assert!(check_data_dir(&data).unwrap_err().contains("chmod 700"));
        }
        set(&data, 0o700);
        assert_eq!(exposed_mode(&data).unwrap(), None);
        assert_eq!(exposed_mode(&top.path().join("missing")).unwrap(), None);
    }

    #[test]
    fn passwords_in_connection_strings() {
        assert!(has_password("postgres://u:pw@h:5432/db"));
        assert!(has_password("postgres://h/db?password=x"));
        assert!(has_password("host=h user=u password=x"));
        assert!(!has_password("postgres://u@h/db"));
        assert!(!has_password("postgres://h/db?sslmode=require"));
    }
}
