//! The stored form of a block:
//!
//! ```text
//! magic "TSB1" | codec u8 | 3 zero bytes | data key id u64 LE | salt [16] | nonce [12] | plain length u32 LE
//! AES-256-GCM(payload), associated data = header ‖ block id
//! ```
//!
//! The payload is the zstd frame of the block, or the block itself when
//! compression does not pay (codec 1 and 0). Codec 2 is a block stored as
//! a delta: the payload is the id of a base block, then a zstd frame with
//! the base's plaintext as its raw prefix. The server writes it (the
//! `recompress` worker, for the next version of a file's block) and never
//! sends it: a delta opens only with its base, which is always stored
//! whole, so a read follows at most one link. Each block is encrypted
//! under its own key, derived from the data key and the random salt, so no
//! key ever seals more than one message. Reading decrypts, decompresses (capped at the largest
//! block, against bombs) and re-hashes: damage is an error, never wrong bytes.

use bytes::Bytes;
use rand::RngCore;
use tessera_proto::BlockId;
use tessera_proto::api::BlockCodec;
use tessera_proto::block::MAX_BLOCK;
use tessera_proto::pack::{MAX_FRAME_PLAIN, MAX_PACK_PLAIN};

use super::aead;
use super::keys::KeyRing;

pub const MAGIC: &[u8; 4] = b"TSB1";
pub const HEADER_LEN: usize = 48;
/// Bytes sealing adds to a payload: the header and the GCM tag.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + aead::TAG_LEN;
/// zstd level for blocks compressed by the server; clients pick their own.
pub const ZSTD_LEVEL: i32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block {0} is damaged in storage: {1}")]
    Corrupt(BlockId, &'static str),
    #[error("block {0} is sealed with data key {1}, which this server does not have")]
    UnknownKey(BlockId, i64),
    #[error("the bytes sent do not hash to block id {expected} (they hash to {actual})")]
    HashMismatch { expected: BlockId, actual: BlockId },
    #[error("block body is not a valid zstd frame of at most {MAX_BLOCK} bytes")]
    BadPayload,
    #[error("block is larger than {MAX_BLOCK} bytes")]
    TooLarge,
    #[error(
        "block {0} is larger than {MAX_FRAME_PLAIN} bytes: a pack carries small blocks only; \
         send larger ones one at a time with PUT /api/v1/blocks/{0}"
    )]
    PackFrameTooLarge(BlockId),
    #[error(
        "the blocks of this pack inflate to more than {MAX_PACK_PLAIN} bytes: send fewer per pack"
    )]
    PackTooLarge,
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
    #[error("worker thread failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Config(String),
    #[error("block {0} is stored as a delta against a block that is itself a delta")]
    NestedDelta(BlockId),
    #[error(transparent)]
    Seal(#[from] aead::SealError),
}

impl From<BlockCodec> for Codec {
    fn from(c: BlockCodec) -> Self {
        match c {
            BlockCodec::Raw => Codec::Raw,
            BlockCodec::Zstd => Codec::Zstd,
        }
    }
}

impl From<Codec> for BlockCodec {
    fn from(c: Codec) -> Self {
        match c {
            Codec::Raw => BlockCodec::Raw,
            Codec::Zstd => BlockCodec::Zstd,
        }
    }
}

/// Compresses `plain` at the server's level, keeping it raw when zstd does
/// not make it smaller (the rule clients follow too).
pub fn compress<B: AsRef<[u8]> + Into<Vec<u8>>>(plain: B) -> (Codec, Vec<u8>) {
    let (codec, payload) = tessera_proto::block::compress_or_raw(plain, ZSTD_LEVEL);
    (codec.into(), payload)
}

/// The smaller of a block's stored payload and its plaintext compressed at
/// `level`. A block stored raw, or that its first compression hardly
/// shrank, is kept as it is: a higher level would not pay for its work.
pub fn squeeze(codec: Codec, payload: Bytes, plain: &[u8], level: i32) -> (Codec, Bytes) {
    let barely_shrank = payload.len() as u64 * 20 > plain.len() as u64 * 19;
    if codec == Codec::Raw || barely_shrank {
        return (codec, payload);
    }
    match zstd::bulk::compress(plain, level) {
        Ok(smaller) if smaller.len() < payload.len() => (Codec::Zstd, Bytes::from(smaller)),
        _ => (codec, payload),
    }
}

/// Turns a payload back into the block, refusing more than `MAX_BLOCK` bytes.
pub fn decompress(codec: Codec, payload: &[u8]) -> Result<Vec<u8>, BlockError> {
    decompress_capped(codec, payload, MAX_BLOCK)
}

/// Turns a payload back into the block, doing no more than `cap` bytes of
/// work: a block that would be larger is `TooLarge`.
pub fn decompress_capped(codec: Codec, payload: &[u8], cap: usize) -> Result<Vec<u8>, BlockError> {
    match codec {
        Codec::Raw if payload.len() > cap => Err(BlockError::TooLarge),
        Codec::Raw => Ok(payload.to_vec()),
        Codec::Zstd => {
            // A frame that declares its size is judged before any work,
            // and gets a buffer of that size, not of the cap: what every
            // client writes (one frame). Anything else (several frames, a
            // skippable one first) gets the cap's room.
            let declared = match zstd::zstd_safe::get_frame_content_size(payload) {
                Ok(Some(n)) if n > cap as u64 => return Err(BlockError::TooLarge),
                Ok(n) => n,
                Err(_) => return Err(BlockError::BadPayload),
            };
            let mut plain = match declared.map(|n| zstd::bulk::decompress(payload, n as usize)) {
                Some(Ok(plain)) => plain,
                _ => zstd::bulk::decompress(payload, cap).map_err(|_| BlockError::BadPayload)?,
            };
            // A frame without its size got the cap's room: what is kept (a
            // block held for a running hash) must weigh what it holds.
            if plain.capacity() > plain.len() + plain.len() / 8 {
                plain.shrink_to_fit();
            }
            Ok(plain)
        }
    }
}

pub fn verify(expected: &BlockId, plain: &[u8]) -> Result<(), BlockError> {
    let actual = BlockId::of(plain);
    if actual != *expected {
        return Err(BlockError::HashMismatch {
            expected: *expected,
            actual,
        });
    }
    Ok(())
}

fn block_key(data_key: &[u8; 32], salt: &[u8; 16]) -> [u8; 32] {
    let mut material = [0u8; 48];
    material[..32].copy_from_slice(data_key);
    material[32..].copy_from_slice(salt);
    blake3::derive_key("tessera 2026 block key v1", &material)
}

fn aad(header: &[u8], id: &BlockId) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(id.as_bytes());
    aad
}

/// Seals a verified payload into its stored form.
pub fn seal(
    id: &BlockId,
    codec: Codec,
    payload: &[u8],
    plain_len: usize,
    ring: &KeyRing,
) -> Result<Vec<u8>, BlockError> {
    seal_as(id, codec as u8, payload, plain_len, ring)
}

/// Seals `frame`, a [`tessera_proto::delta::prefix_frame`] of the block
/// against `base`'s plaintext, into its stored form.
pub fn seal_delta(
    id: &BlockId,
    base: &BlockId,
    frame: &[u8],
    plain_len: usize,
    ring: &KeyRing,
) -> Result<Vec<u8>, BlockError> {
    let mut payload = Vec::with_capacity(BASE_LEN + frame.len());
    payload.extend_from_slice(base.as_bytes());
    payload.extend_from_slice(frame);
    seal_as(id, DELTA, &payload, plain_len, ring)
}

/// The codec byte of a block stored as a delta against a base block.
const DELTA: u8 = 2;
/// A delta's payload starts with its base's id.
const BASE_LEN: usize = 32;

fn seal_as(
    id: &BlockId,
    codec: u8,
    payload: &[u8],
    plain_len: usize,
    ring: &KeyRing,
) -> Result<Vec<u8>, BlockError> {
    let (key_id, data_key) = ring.current();
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut salt);
    rand::rng().fill_bytes(&mut nonce);
    let mut header = Vec::with_capacity(SEAL_OVERHEAD + payload.len());
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&[codec, 0, 0, 0]);
    header.extend_from_slice(&(key_id as u64).to_le_bytes());
    header.extend_from_slice(&salt);
    header.extend_from_slice(&nonce);
    header.extend_from_slice(&(plain_len as u32).to_le_bytes());
    let aad = aad(&header, id);
    let mut sealed = header;
    sealed.extend_from_slice(payload);
    aead::seal_tail(
        &block_key(data_key, &salt),
        nonce,
        &aad,
        &mut sealed,
        HEADER_LEN,
    )?;
    Ok(sealed)
}

/// A stored block, decrypted and authenticated.
pub enum Opening {
    /// Opened and verified: the codec, the payload as stored, the plaintext.
    Whole(Codec, Vec<u8>, Vec<u8>),
    /// Stored as a delta: it opens with its base's plaintext.
    Delta(Pending),
}

/// A block stored as a delta, waiting for its base.
pub struct Pending {
    base: BlockId,
    frame: Vec<u8>,
    plain_len: usize,
}

impl Pending {
    /// The block whose plaintext this one opens with.
    pub fn base(&self) -> BlockId {
        self.base
    }

    /// The stored frame, as sealed (to seal it again elsewhere).
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }

    /// Rebuilds the block from its base's (verified) plaintext and checks
    /// its length and hash.
    pub fn finish(&self, id: &BlockId, base_plain: &[u8]) -> Result<Vec<u8>, BlockError> {
        let plain =
            tessera_proto::delta::open_prefix_frame(base_plain, &self.frame, id, self.plain_len)
                .map_err(|_| {
                    BlockError::Corrupt(*id, "delta does not rebuild the block from its base")
                })?;
        if plain.len() != self.plain_len {
            return Err(BlockError::Corrupt(*id, "wrong length"));
        }
        Ok(plain)
    }
}

/// Opens a stored block: decrypts, and, unless it is a delta, decompresses
/// and checks its hash.
pub fn open(id: &BlockId, stored: &[u8], ring: &KeyRing) -> Result<Opening, BlockError> {
    let corrupt = |why| BlockError::Corrupt(*id, why);
    if stored.len() < SEAL_OVERHEAD || &stored[..4] != MAGIC {
        return Err(corrupt("bad header"));
    }
    let (header, ct) = stored.split_at(HEADER_LEN);
    let codec = match header[4] {
        0 => Some(Codec::Raw),
        1 => Some(Codec::Zstd),
        DELTA => None,
        _ => return Err(corrupt("unknown codec")),
    };
    let le8 = |r: std::ops::Range<usize>| {
        header[r]
            .iter()
            .rev()
            .fold(0u64, |a, b| (a << 8) | *b as u64)
    };
    let key_id = le8(8..16) as i64;
    let plain_len = le8(44..48) as usize;
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&header[16..32]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&header[32..44]);
    let data_key = ring
        .get(key_id)
        .ok_or(BlockError::UnknownKey(*id, key_id))?;
    let aad = aad(header, id);
    let mut payload = aead::open(&block_key(data_key, &salt), nonce, &aad, ct)
        .ok_or_else(|| corrupt("authentication failed"))?;
    let Some(codec) = codec else {
        if payload.len() < BASE_LEN || plain_len > MAX_BLOCK {
            return Err(corrupt("bad delta header"));
        }
        let frame = payload.split_off(BASE_LEN);
        let mut base = [0u8; BASE_LEN];
        base.copy_from_slice(&payload);
        return Ok(Opening::Delta(Pending {
            base: BlockId(base),
            frame,
            plain_len,
        }));
    };
    let plain = decompress(codec, &payload).map_err(|_| corrupt("payload does not decompress"))?;
    if plain.len() != plain_len {
        return Err(corrupt("wrong length"));
    }
    verify(id, &plain).map_err(|_| corrupt("content does not match its id"))?;
    Ok(Opening::Whole(codec, payload, plain))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A frame that does not say its size (any streaming encoder's) is
    /// decompressed into the cap's room; what comes back must not keep
    /// that room, or a held block weighs the cap whatever its size.
    #[test]
    fn a_frame_without_its_size_comes_back_at_its_size() {
        let plain = vec![7u8; 1000];
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        std::io::Write::write_all(&mut enc, &plain).unwrap();
        let frame = enc.finish().unwrap();
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&frame),
            Ok(None)
        ));
        let out = decompress_capped(Codec::Zstd, &frame, 16 << 20).unwrap();
        assert_eq!(out, plain);
        assert!(out.capacity() < 2000, "{}", out.capacity());
    }

    /// Text stored at the clients' fast level shrinks at a higher one and
    /// still opens to the same bytes; a block stored raw, or barely
    /// shrunk, is left as it is.
    #[test]
    fn squeezing_shrinks_what_compresses_and_keeps_the_rest() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("line {} of {}\n", i % 97, i % 13).into_bytes())
            .collect();
        let fast = zstd::bulk::compress(&text, 1).unwrap();
        let (codec, squeezed) = squeeze(Codec::Zstd, Bytes::from(fast.clone()), &text, 12);
        assert_eq!(codec, Codec::Zstd);
        assert!(
            squeezed.len() < fast.len(),
            "{} < {}",
            squeezed.len(),
            fast.len()
        );
        assert_eq!(decompress(codec, &squeezed).unwrap(), text);

        let noise: Vec<u8> = (0..50_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let raw = Bytes::from(noise.clone());
        assert_eq!(
            squeeze(Codec::Raw, raw.clone(), &noise, 12),
            (Codec::Raw, raw)
        );
        let barely = Bytes::from(zstd::bulk::compress(&noise, 1).unwrap());
        if barely.len() * 20 > noise.len() * 19 {
            assert_eq!(squeeze(Codec::Zstd, barely.clone(), &noise, 12).1, barely);
        }
    }

    /// A block sealed by an earlier release (another AES-GCM
    /// implementation) still opens, and a flipped bit in it is damage.
    #[test]
    fn a_block_sealed_by_an_earlier_release_opens() {
        let ring = KeyRing::for_tests();
        let plain = b"a block sealed before the switch of AES-GCM implementation";
        let sealed = hex::decode(
            "54534231000000000100000000000000e6a066e8505204d2b63df666089add1d\
             39536ad9f60cd7d4cc3847053a0000006876ed15896a3044ff13ae2f697c5e94\
             9eb2f4f9c2e4cf983391beef5bb0ba4cf11e0c59bec391f82d2486ad54279d92\
             70990df1a39fa5fce6eca65ac525cef7b44d669283b7416fcea4",
        )
        .unwrap();
        let id = BlockId::of(plain);
        let Opening::Whole(Codec::Raw, _, opened) = open(&id, &sealed, &ring).unwrap() else {
            panic!("not opened as a raw block");
        };
        assert_eq!(opened, plain);
        // In the salt, the ciphertext and the tag.
        for at in [20, HEADER_LEN + 5, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert!(
                matches!(open(&id, &bad, &ring), Err(BlockError::Corrupt(..))),
                "a flipped bit at {at} is found"
            );
        }
        // Sealed now, it opens the same way.
        let again = seal(&id, Codec::Raw, plain, plain.len(), &ring).unwrap();
        assert_eq!(again.len(), sealed.len());
        assert!(matches!(open(&id, &again, &ring), Ok(Opening::Whole(..))));
    }

    /// A block stored as a delta opens only against its base: the right
    /// base rebuilds it exactly; another block, or any flipped bit of the
    /// stored bytes, is damage, never wrong bytes.
    #[test]
    fn a_delta_opens_against_its_base_and_nothing_else() {
        let ring = KeyRing::for_tests();
        let old: Vec<u8> = (0..40_000u32)
            .flat_map(|i| format!("line {i} of the old version\n").into_bytes())
            .collect();
        let mut new = old.clone();
        new.splice(300_000..300_000, b"an inserted line\n".iter().copied());
        let (base, id) = (BlockId::of(&old), BlockId::of(&new));
        let frame = tessera_proto::delta::prefix_frame(&old, &new, 12).unwrap();
        assert!(frame.len() < 2000, "{}", frame.len());
        let sealed = seal_delta(&id, &base, &frame, new.len(), &ring).unwrap();
        let Opening::Delta(pending) = open(&id, &sealed, &ring).unwrap() else {
            panic!("a delta opened as a whole block");
        };
        assert_eq!(pending.base(), base);
        assert!(pending.finish(&id, &old).unwrap() == new);

        let other = [&old[..], b"more"].concat();
        assert!(matches!(
            pending.finish(&id, &other),
            Err(BlockError::Corrupt(..))
        ));
        for at in [4, HEADER_LEN + 3, sealed.len() / 2, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 0x10;
            assert!(
                matches!(open(&id, &bad, &ring), Err(BlockError::Corrupt(..))),
                "a flipped bit at {at} is found"
            );
        }
        // Sealed for one block id, it does not open as another.
        assert!(open(&base, &sealed, &ring).is_err());
    }

    /// A payload of two frames, the first declaring only its own size,
    /// still decompresses whole.
    #[test]
    fn a_payload_of_several_frames_decompresses_whole() {
        let mut frames = zstd::bulk::compress(&[1u8; 300], 3).unwrap();
        frames.extend(zstd::bulk::compress(&[2u8; 500], 3).unwrap());
        let out = decompress_capped(Codec::Zstd, &frames, 16 << 20).unwrap();
        assert_eq!(out.len(), 800);
        assert_eq!(&out[299..301], &[1, 2]);
    }
}
