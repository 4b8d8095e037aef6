//! Sign-in user codes (§3.6): 16 bytes from the OS CSPRNG, base64url without padding.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// A sign-in code as printed in the URL (`user_code=...`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UserCode(String);

/// Why a code was refused before any lookup.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodeError {
    /// Not 22 base64url characters.
    #[error("code invalid")]
    Malformed,
    /// The OS random source failed.
    #[error("random source unavailable")]
    Random,
}

impl UserCode {
    /// A fresh random code.
    pub fn generate() -> Result<Self, CodeError> {
        let mut bytes = [0u8; 16];
        getrandom::getrandom(&mut bytes).map_err(|_| CodeError::Random)?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Validates the shape of a code taken from a URL.
    pub fn parse(s: &str) -> Result<Self, CodeError> {
        if s.len() != 22 {
            return Err(CodeError::Malformed);
        }
        match URL_SAFE_NO_PAD.decode(s) {
            Ok(b) if b.len() == 16 => Ok(Self(s.to_string())),
            _ => Err(CodeError::Malformed),
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for UserCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Codes are bearer secrets for a short while; log a prefix only.
        write!(f, "UserCode({}…)", self.0.get(..4).unwrap_or(""))
    }
}

impl std::fmt::Display for UserCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_are_22_chars_and_parse() {
        let a = UserCode::generate().unwrap();
        let b = UserCode::generate().unwrap();
        assert_eq!(a.as_str().len(), 22);
        assert_ne!(a, b);
        assert_eq!(UserCode::parse(a.as_str()).unwrap(), a);
    }

    #[test]
    fn malformed_codes_refused() {
        for s in [
            "",
            "short",
            "C6I3E-wUa1ne-TVtrORlQw=",
            "C6I3E-wUa1ne-TVtrORl!w",
            &"a".repeat(500),
        ] {
            assert_eq!(UserCode::parse(s), Err(CodeError::Malformed), "{s:?}");
        }
        assert!(UserCode::parse("C6I3E-wUa1ne-TVtrORlQw").is_ok());
    }
}
