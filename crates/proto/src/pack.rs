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
/// Largest block a pack may carry, before and after decompression: packs
/// are for small files' blocks; larger ones go up one at a time.
pub const MAX_FRAME_PLAIN: usize = 256 << 10;
/// Most bytes the blocks of one pack may inflate to, together.
pub const MAX_PACK_PLAIN: usize = 32 << 20;

const FRAME_HEADER: usize = 32 + 1 + 4;

pub fn encode_frame(out: &mut Vec<u8>, id: &BlockId, codec: BlockCodec, payload: &[u8]) {
    out.extend_from_slice(&frame_header(id, codec, payload.len()));
    out.extend_from_slice(payload);
}

/// The bytes before a frame's payload (for answers sent as a stream).
pub fn frame_header(id: &BlockId, codec: BlockCodec, payload_len: usize) -> [u8; FRAME_HEADER] {
    let mut h = [0u8; FRAME_HEADER];
    h[..32].copy_from_slice(id.as_bytes());
    h[32] = match codec {
        BlockCodec::Raw => 0,
        BlockCodec::Zstd => 1,
    };
    h[33..].copy_from_slice(&(payload_len as u32).to_le_bytes());
    h
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

/// Why a well-formed pack is refused as an upload.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackRefused {
    #[error("block {0} appears more than once in the pack: send each block once")]
    Duplicate(BlockId),
    #[error(
        "block {0} takes {1} bytes in the pack, more than {MAX_FRAME_PLAIN}: a pack carries \
         small blocks only; send larger ones one at a time with PUT /api/v1/blocks/{0}"
    )]
    FrameTooLarge(BlockId, usize),
}

/// The rules an uploaded pack keeps besides its framing: each block once,
/// and only small blocks (checked again after decompression).
pub fn check_upload(
    frames: &[(BlockId, BlockCodec, std::ops::Range<usize>)],
) -> Result<(), PackRefused> {
    let mut seen = std::collections::HashSet::with_capacity(frames.len());
    for (id, _, range) in frames {
        if range.len() > MAX_FRAME_PLAIN {
            return Err(PackRefused::FrameTooLarge(*id, range.len()));
        }
        if !seen.insert(*id) {
            return Err(PackRefused::Duplicate(*id));
        }
    }
    Ok(())
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

    #[test]
    fn uploads_refuse_repeated_and_large_blocks() {
        let mut body = Vec::new();
        let a = BlockId::of(b"a");
        encode_frame(&mut body, &a, BlockCodec::Raw, b"a");
        assert_eq!(check_upload(&decode(&body).unwrap()), Ok(()));
        encode_frame(&mut body, &a, BlockCodec::Raw, b"a");
        assert_eq!(
            check_upload(&decode(&body).unwrap()),
            Err(PackRefused::Duplicate(a))
        );
        let big = vec![7u8; MAX_FRAME_PLAIN + 1];
        let mut body = Vec::new();
        encode_frame(&mut body, &BlockId::of(&big), BlockCodec::Raw, &big);
        assert!(matches!(
            check_upload(&decode(&body).unwrap()),
            Err(PackRefused::FrameTooLarge(_, n)) if n == big.len()
        ));
    }
}
