//! The token signing key: `OUTPOST_TOKEN_KEY`, else `<data>/token.key` (created on first start),
//! else (no data directory) a random one. A shared (PostgreSQL) registry keeps one for every
//! relay process; the server wiring asks the store for it first.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Why the signing key could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// `OUTPOST_TOKEN_KEY`, or the key stored in the shared registry, is not base64.
    #[error("{what} is not base64")]
    NotBase64 {
        /// Where the key came from.
        what: &'static str,
        /// The decoder's error.
        #[source]
        source: base64::DecodeError,
    },
    /// The key file could not be written.
    #[error("cannot write the token key {path}")]
    Write {
        /// `<data>/token.key`.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The system's random number generator failed.
    #[error("no system randomness for the token key")]
    NoRandomness,
}

/// 32 random bytes.
pub(crate) fn random_key() -> Result<Vec<u8>, KeyError> {
    let mut key = vec![0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| KeyError::NoRandomness)?;
    Ok(key)
}

/// Decodes a base64 key.
pub(crate) fn decode_key(b64: &str, what: &'static str) -> Result<Vec<u8>, KeyError> {
    STANDARD
        .decode(b64.trim())
        .map_err(|source| KeyError::NotBase64 { what, source })
}

/// The signing key in `<data>/token.key`, created (32 random bytes) on first start so that
/// tokens outlive a restart. `OUTPOST_TOKEN_KEY` (base64) overrides it, for relays that must
/// share a key.
pub(crate) fn load_or_create_key(data_dir: Option<&Path>) -> Result<Vec<u8>, KeyError> {
    if let Ok(b64) = std::env::var("OUTPOST_TOKEN_KEY") {
        return decode_key(&b64, "OUTPOST_TOKEN_KEY");
    }
    let Some(dir) = data_dir else {
        return random_key();
    };
    let path = dir.join("token.key");
    if let Ok(key) = std::fs::read(&path)
        && key.len() >= 32
    {
        return Ok(key);
    }
    let key = random_key()?;
    write_private(&path, &key).map_err(|source| KeyError::Write { path, source })?;
    Ok(key)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(bytes)
}
