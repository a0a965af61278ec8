//! The body of `POST /api/v1/blocks/pack`: many small blocks in one
//! request, each framed as
//!
//! ```text
//! block id [32] | codec u8 (0 raw, 1 zstd) | length u32 LE | payload [length]
//! ```

use crate::BlockId;
use crate::api::BlockCodec;

/// Largest pack body a server accepts.
pub const MAX_PACK_BYTES: usize = 32 << 20;
/// Most blocks in one pack.
pub const MAX_PACK_BLOCKS: usize = 4096;

const FRAME_HEADER: usize = 32 + 1 + 4;

pub fn encode_frame(out: &mut Vec<u8>, id: &BlockId, codec: BlockCodec, payload: &[u8]) {
    out.extend_from_slice(id.as_bytes());
    out.push(match codec {
        BlockCodec::Raw => 0,
        BlockCodec::Zstd => 1,
    });
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

pub fn frame_len(payload: usize) -> usize {
    FRAME_HEADER + payload
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("pack body is malformed at byte {0}: {1}")]
pub struct BadPack(pub usize, pub &'static str);

/// Splits a pack body into (id, codec, payload range) frames.
pub fn decode(body: &[u8]) -> Result<Vec<(BlockId, BlockCodec, std::ops::Range<usize>)>, BadPack> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < body.len() {
        if body.len() - at < FRAME_HEADER {
            return Err(BadPack(at, "truncated frame header"));
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&body[at..at + 32]);
        let codec = match body[at + 32] {
            0 => BlockCodec::Raw,
            1 => BlockCodec::Zstd,
            _ => return Err(BadPack(at + 32, "unknown codec")),
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(&body[at + 33..at + 37]);
        let len = u32::from_le_bytes(len) as usize;
        let start = at + FRAME_HEADER;
        if body.len() - start < len {
            return Err(BadPack(start, "truncated payload"));
        }
        frames.push((BlockId(id), codec, start..start + len));
        if frames.len() > MAX_PACK_BLOCKS {
            return Err(BadPack(at, "too many blocks in one pack"));
        }
        at = start + len;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_truncation_is_caught() {
        let mut body = Vec::new();
        let a = BlockId::of(b"a");
        encode_frame(&mut body, &a, BlockCodec::Raw, b"a");
        encode_frame(&mut body, &BlockId::of(b""), BlockCodec::Zstd, b"zz");
        let frames = decode(&body).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].0, a);
        assert_eq!(&body[frames[1].2.clone()], b"zz");
        assert!(decode(&body[..body.len() - 1]).is_err());
        assert!(decode(&body[..10]).is_err());
        assert_eq!(decode(&[]).unwrap().len(), 0);
    }
}
