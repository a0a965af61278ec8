//! `Upload-Checksum` of the TUS checksum extension: a digest of one PATCH
//! body, checked before anything of that body becomes durable.

use base64::Engine;
use sha2::Digest;

/// The algorithms offered in `Tus-Checksum-Algorithm`.
pub const ALGORITHMS: &str = "sha1,sha256,md5";

pub enum Checksum {
    Sha1(sha1::Sha1, Vec<u8>),
    Sha256(sha2::Sha256, Vec<u8>),
    Md5(md5::Md5, Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum ChecksumError {
    #[error("Upload-Checksum must be `ALGORITHM BASE64-DIGEST`")]
    Malformed,
    #[error("checksum algorithm `{0}` is not supported: use one of {ALGORITHMS}")]
    Unsupported(String),
}

impl Checksum {
    /// Parses an `Upload-Checksum` header value.
    pub fn parse(header: &str) -> Result<Self, ChecksumError> {
        let (algo, digest) = header
            .trim()
            .split_once(' ')
            .ok_or(ChecksumError::Malformed)?;
        let expected = base64::engine::general_purpose::STANDARD
            .decode(digest.trim())
            .map_err(|_| ChecksumError::Malformed)?;
        Ok(match algo.to_ascii_lowercase().as_str() {
            "sha1" => Checksum::Sha1(sha1::Sha1::new(), expected),
            "sha256" => Checksum::Sha256(sha2::Sha256::new(), expected),
            "md5" => Checksum::Md5(md5::Md5::new(), expected),
            other => return Err(ChecksumError::Unsupported(other.to_owned())),
        })
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Checksum::Sha1(h, _) => h.update(data),
            Checksum::Sha256(h, _) => h.update(data),
            Checksum::Md5(h, _) => h.update(data),
        }
    }

    /// Whether the bytes fed match the digest the client sent.
    pub fn matches(self) -> bool {
        match self {
            Checksum::Sha1(h, want) => h.finalize().as_slice() == want.as_slice(),
            Checksum::Sha256(h, want) => h.finalize().as_slice() == want.as_slice(),
            Checksum::Md5(h, want) => h.finalize().as_slice() == want.as_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn checks_known_digests() {
        // sha1("hello") and md5("hello"), base64.
        for (header, ok) in [
            ("sha1 qvTGHdzF6KLavt4PO0gs2a6pQ00=", true),
            ("md5 XUFAKrxLKna5cZ2REBfFkg==", true),
            ("sha1 AAAAAAAAAAAAAAAAAAAAAAAAAAA=", false),
        ] {
            let mut c = Checksum::parse(header).unwrap();
            c.update(b"hel");
            c.update(b"lo");
            assert_eq!(c.matches(), ok, "{header}");
        }
        assert!(matches!(
            Checksum::parse("crc32 AAAA"),
            Err(ChecksumError::Unsupported(_))
        ));
        assert!(matches!(
            Checksum::parse("sha1"),
            Err(ChecksumError::Malformed)
        ));
    }
}
