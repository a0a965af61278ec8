//! Block rules: how files are cut, how blocks and files are named.
//!
//! Client and server must cut identically, so the parameters live here and
//! the server reports them (`GET /api/v1/info`). The chunker's cut points
//! changed between fastcdc releases, hence the exact pin and the version tag
//! recorded with every file revision.

use std::fmt;
use std::io::Read;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Smallest block FastCDC cuts (a file below it is one block).
pub const MIN_BLOCK: usize = 1 << 20;
/// Target average block size.
pub const AVG_BLOCK: usize = 4 << 20;
/// Largest block: also the cap on any decompressed block.
pub const MAX_BLOCK: usize = 16 << 20;
/// Names the cutting rules; stored with each revision.
pub const CHUNKER: &str = "fastcdc-v2020-5.0.0/1M-4M-16M";

/// A chunker over any reader with the project's parameters.
pub fn chunker<R: Read>(source: R) -> fastcdc::v2020::StreamCDC<R> {
    fastcdc::v2020::StreamCDC::new(source, MIN_BLOCK, AVG_BLOCK, MAX_BLOCK)
}

/// The same chunker over an async reader: it cuts exactly where
/// [`chunker`] does, so a server cutting a request body and a client
/// cutting a file name the same blocks.
#[cfg(feature = "tokio")]
pub fn chunker_async<R: tokio::io::AsyncRead + Unpin>(
    source: R,
) -> fastcdc::v2020::AsyncStreamCDC<R> {
    fastcdc::v2020::AsyncStreamCDC::new(source, MIN_BLOCK, AVG_BLOCK, MAX_BLOCK)
}

/// Compresses a block with zstd at `level`, or keeps it raw when zstd does
/// not make it smaller (already compressed data, tiny blocks). The one rule
/// for the encoding a block travels and rests in, on either side. Given
/// an owned block, a raw one is returned without a copy.
pub fn compress_or_raw<B>(plain: B, level: i32) -> (crate::api::BlockCodec, Vec<u8>)
where
    B: AsRef<[u8]> + Into<Vec<u8>>,
{
    use crate::api::BlockCodec;
    let bytes = plain.as_ref();
    if incompressible(bytes, level) {
        return (BlockCodec::Raw, plain.into());
    }
    match zstd::bulk::compress(bytes, level) {
        Ok(z) if z.len() < bytes.len() => (BlockCodec::Zstd, z),
        _ => (BlockCodec::Raw, plain.into()),
    }
}

/// Blocks at least this long are probed before zstd is given them whole.
const PROBE_FROM: usize = 256 << 10;
const PROBE_LEN: usize = 32 << 10;

/// Whether samples of `bytes` (its start, middle and end) all fail to
/// shrink by 3%: then the whole block almost surely would too, and
/// compressing it costs a few milliseconds a MiB for nothing — on both
/// sides, as the receiver would decompress it. Already compressed media,
/// archives and encrypted files are most of the bytes people store.
fn incompressible(bytes: &[u8], level: i32) -> bool {
    if bytes.len() < PROBE_FROM {
        return false;
    }
    let mid = bytes.len() / 2 - PROBE_LEN / 2;
    [0, mid, bytes.len() - PROBE_LEN].iter().all(|&at| {
        let sample = &bytes[at..at + PROBE_LEN];
        zstd::bulk::compress(sample, level).map_or(true, |z| z.len() * 100 > sample.len() * 97)
    })
}

/// A 32-byte BLAKE3 digest written as lowercase hex on the wire.
macro_rules! digest_type {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub fn of(data: &[u8]) -> Self {
                Self(*blake3::hash(data).as_bytes())
            }
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            /// From stored bytes; `None` unless exactly 32 of them.
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                b.try_into().ok().map(Self)
            }
        }

        impl From<blake3::Hash> for $name {
            fn from(h: blake3::Hash) -> Self {
                Self(*h.as_bytes())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = InvalidDigest;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(InvalidDigest(s.chars().take(80).collect()));
                }
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out)
                    .map_err(|_| InvalidDigest(s.chars().take(80).collect()))?;
                Ok(Self(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some("^[0-9a-f]{64}$"))
                    .description(Some($doc))
                    .into()
            }
        }
        impl utoipa::ToSchema for $name {}
    };
}

digest_type!(BlockId, "BLAKE3-256 of a block's plaintext, lowercase hex.");
digest_type!(
    ContentHash,
    "BLAKE3-256 of a whole file, lowercase hex (what `b3sum` prints)."
);

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a BLAKE3 digest: expected 64 lowercase hex digits")]
pub struct InvalidDigest(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_and_rejects_bad_hex() {
        let id = BlockId::of(b"hello");
        assert_eq!(id.to_hex(), blake3::hash(b"hello").to_hex().as_str());
        assert_eq!(id.to_hex().parse::<BlockId>().ok(), Some(id));
        assert!("abc".parse::<BlockId>().is_err());
        assert!(id.to_hex().to_uppercase().parse::<BlockId>().is_err());
        assert!("zz".repeat(32).parse::<BlockId>().is_err());
    }

    #[test]
    fn small_input_is_one_block_and_cuts_are_deterministic() {
        let small = vec![7u8; 1000];
        let chunks: Vec<_> = chunker(&small[..]).collect::<Result<_, _>>().unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].length, 1000);
        let empty: Vec<u8> = Vec::new();
        assert_eq!(chunker(&empty[..]).count(), 0);
    }

    #[test]
    fn compressible_blocks_become_zstd_frames_of_themselves() {
        use crate::api::BlockCodec;
        let plain = b"tessera ".repeat(10_000);
        let (codec, body) = compress_or_raw(plain.clone(), 3);
        assert_eq!(codec, BlockCodec::Zstd);
        assert!(body.len() < plain.len());
        assert_eq!(zstd::bulk::decompress(&body, MAX_BLOCK).unwrap(), plain);
    }

    #[test]
    fn a_block_compressible_anywhere_the_probe_looks_is_compressed() {
        use crate::api::BlockCodec;
        let mut noise = vec![0u8; 4 << 20];
        blake3::Hasher::new()
            .update(b"noise")
            .finalize_xof()
            .fill(&mut noise);
        assert_eq!(compress_or_raw(noise.clone(), 3).0, BlockCodec::Raw);
        // Text at the start, the middle or the end alone is found.
        for at in [0, (2 << 20) - 16_000, (4 << 20) - 40_000] {
            let mut block = noise.clone();
            block[at..at + 40_000].copy_from_slice(&b"tessera ".repeat(5_000));
            let (codec, body) = compress_or_raw(block.clone(), 3);
            assert_eq!(codec, BlockCodec::Zstd, "text at {at}");
            assert_eq!(zstd::bulk::decompress(&body, MAX_BLOCK).unwrap(), block);
        }
    }

    #[test]
    fn incompressible_and_tiny_blocks_stay_raw() {
        use crate::api::BlockCodec;
        // BLAKE3's output stream: no redundancy for zstd to find.
        let mut noise = vec![0u8; 100_000];
        blake3::Hasher::new()
            .update(b"noise")
            .finalize_xof()
            .fill(&mut noise);
        assert_eq!(compress_or_raw(noise.clone(), 3), (BlockCodec::Raw, noise));
        // A frame has a header: one byte never shrinks.
        assert_eq!(compress_or_raw(vec![9], 1), (BlockCodec::Raw, vec![9]));
        assert_eq!(
            compress_or_raw(Vec::new(), 1),
            (BlockCodec::Raw, Vec::new())
        );
    }
}
