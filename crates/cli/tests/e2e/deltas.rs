//! Small edits of a large file travel as deltas: the editing device sends
//! an rsync delta against the block its edit replaced, and the other
//! device, which still holds that block, receives a patch against it.
//! Bytes are counted on the wire by a relay in front of each device.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tessera_client::Remote;
use tessera_client::sync::Syncer;
use tessera_proto::BlockId;
use tessera_proto::api::{BlockCodec, BlockRef, CommitRequest, Reuse};

use crate::common::relay::Relay;
use crate::common::{Backend, TestServer, mixed_data, random_data};

const MIB: usize = 1 << 20;

struct Device {
    dir: std::path::PathBuf,
    syncer: Syncer,
    relay: Arc<Relay>,
}

async fn device(s: &TestServer, name: &str) -> Device {
    let relay = Relay::start(&s.url).await;
    let anon = Remote::new(&relay.url, None).unwrap();
    let token = anon
        .login("alice", "alice-password", name)
        .await
        .unwrap()
        .token;
    let dir = s.scratch(name);
    std::fs::create_dir_all(&dir).unwrap();
    let syncer = Syncer::open(&dir, anon.with_token(token), "alice", name)
        .await
        .unwrap();
    Device { dir, syncer, relay }
}

impl Device {
    /// Syncs once; returns the bytes (up, down) it moved on the wire.
    async fn sync(&mut self) -> (u64, u64) {
        self.relay.reset();
        let r = self.syncer.sync_once().await.unwrap();
        assert!(r.stuck.is_empty(), "{:?}", r.stuck);
        (
            self.relay.up.load(Ordering::SeqCst),
            self.relay.down.load(Ordering::SeqCst),
        )
    }
}

/// One edit made on `a`, carried to `b`; returns (bytes up from a, bytes
/// down to b) and checks that `b` ends with exactly `content`.
async fn carry(a: &mut Device, b: &mut Device, content: &[u8]) -> (u64, u64) {
    std::fs::write(a.dir.join("large.bin"), content).unwrap();
    let (up, _) = a.sync().await;
    let (_, down) = b.sync().await;
    assert!(
        std::fs::read(b.dir.join("large.bin")).unwrap() == content,
        "the other device has other bytes"
    );
    (up, down)
}

on_both_backends!(
    small_edits_of_a_large_file_cost_about_what_changed,
    a_delta_is_checked_and_reaches_only_your_own_blocks,
    a_commit_reuses_only_the_blocks_it_names_exactly,
    an_upload_under_way_shows_its_block_list_to_its_owner_until_it_commits
);

async fn small_edits_of_a_large_file_cost_about_what_changed(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.user("alice").await;
    let mut a = device(&s, "laptop").await;
    let mut b = device(&s, "desk").await;
    let mut content = mixed_data(24 * MIB, 3);
    let (up, down) = carry(&mut a, &mut b, &content).await;
    println!("first copy of 24 MiB: up {up}, down {down}");

    // W3b: 100 bytes inserted near the start.
    content.splice(4096..4096, random_data(100, 4));
    let (up, down) = carry(&mut a, &mut b, &content).await;
    println!("100 B insert: up {up}, down {down}");
    assert!(up <= 50_000, "100 B insert sent {up} bytes up");
    assert!(down <= 50_000, "100 B insert took {down} bytes down");

    // W3a: 1 MiB overwritten mid-file.
    let mid = content.len() / 2;
    content[mid..mid + MIB].copy_from_slice(&random_data(MIB, 5));
    let (up, down) = carry(&mut a, &mut b, &content).await;
    println!("1 MiB overwrite: up {up}, down {down}");
    assert!(up <= 1_300_000, "1 MiB overwrite sent {up} bytes up");
    assert!(down <= 1_300_000, "1 MiB overwrite took {down} bytes down");

    // W3c: 10 MiB appended.
    content.extend_from_slice(&random_data(10 * MIB, 6));
    let (up, down) = carry(&mut a, &mut b, &content).await;
    println!("10 MiB append: up {up}, down {down}");
    assert!(up <= 10_600_000, "10 MiB append sent {up} bytes up");
    assert!(down <= 10_600_000, "10 MiB append took {down} bytes down");
}

/// The server rebuilds a delta's block and checks it before storing
/// anything, and a base or block of another user is as unknown as one
/// that does not exist.
async fn a_delta_is_checked_and_reaches_only_your_own_blocks(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let old = mixed_data(2 * MIB, 7);
    let mut new = old.clone();
    new[MIB..MIB + 100].copy_from_slice(&[1u8; 100]);
    let (old_id, new_id) = (BlockId::of(&old), BlockId::of(&new));
    alice
        .put_block(&old_id, BlockCodec::Raw, old.clone().into())
        .await
        .unwrap();

    let sig = alice.block_signature(&old_id).await.unwrap();
    assert!(
        sig.len() < 10_000,
        "signature of 2 MiB is {} bytes",
        sig.len()
    );
    let delta = tessera_proto::delta::delta(&sig, &new).unwrap();

    // A delta naming the wrong block is refused and stores nothing.
    let wrong = BlockId::of(b"not this block");
    let e = alice
        .put_block_delta(&wrong, &old_id, BlockCodec::Raw, delta.clone().into())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    assert_eq!(alice.missing(&[wrong]).await.unwrap(), vec![wrong]);

    // Bob holds neither block: he cannot read alice's signature, use her
    // block as a base, or ask for a patch of it.
    let e = bob.block_signature(&old_id).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    let e = bob
        .put_block_delta(&new_id, &old_id, BlockCodec::Raw, delta.clone().into())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert_eq!(bob.missing(&[new_id]).await.unwrap(), vec![new_id]);

    // A good delta stores the block, and the block reads back whole.
    let stored = alice
        .put_block_delta(&new_id, &old_id, BlockCodec::Raw, delta.into())
        .await
        .unwrap();
    assert_eq!(stored.size, new.len() as u64);
    assert!(alice.missing(&[new_id]).await.unwrap().is_empty());
    assert_eq!(alice.get_block(&new_id).await.unwrap(), new);

    // Down: a patch against the old block rebuilds the new one; a patch
    // applied to bytes that are not the base is an error, never wrong
    // bytes.
    let patched = alice
        .get_block_patched(&new_id, &old_id, old.clone())
        .await
        .unwrap();
    assert_eq!(patched, new);
    let mut damaged = old.clone();
    damaged[10] ^= 1;
    assert!(
        alice
            .get_block_patched(&new_id, &old_id, damaged)
            .await
            .is_err()
    );
    let e = bob
        .get_block_patched(&new_id, &old_id, old)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
}

/// A commit may name stretches of its base revision instead of listing
/// them; a stretch whose check differs, that lies past the base, or a
/// base that is not there is refused with 400 and changes nothing.
async fn a_commit_reuses_only_the_blocks_it_names_exactly(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.user("alice").await;
    let dir = s.scratch("files");
    std::fs::create_dir_all(&dir).unwrap();
    let mut content = mixed_data(24 * MIB, 3);
    std::fs::write(dir.join("v1"), &content).unwrap();
    let first = tessera_client::transfer::upload_file(
        &alice,
        &dir.join("v1"),
        "/doc.bin",
        None,
        Arc::new(|_| {}),
    )
    .await
    .unwrap();
    assert!(first.blocks.len() >= 3, "{} blocks", first.blocks.len());
    let rev = first.entry.rev.unwrap();

    content[100..200].copy_from_slice(&random_data(100, 10));
    std::fs::write(dir.join("v2"), &content).unwrap();
    let cut: Vec<(BlockId, u64)> = tessera_proto::block::chunker(&content[..])
        .map(|c| {
            let c = c.unwrap();
            (BlockId::of(&c.data), c.length as u64)
        })
        .collect();
    let refs = |v: &[(BlockId, u64)]| -> Vec<BlockRef> {
        v.iter().map(|&(id, size)| BlockRef { id, size }).collect()
    };
    let (runs, rest) = Reuse::find(&refs(&first.blocks), &refs(&cut), 2);
    assert_eq!(rest.len(), 1, "only the edited block is listed");
    let changed = rest[0].id;
    let data = &content[..rest[0].size as usize];
    alice
        .put_block(&changed, BlockCodec::Raw, data.to_vec().into())
        .await
        .unwrap();
    let request = |reuse: Vec<Reuse>, base_rev: Option<i64>| CommitRequest {
        path: "/doc.bin".into(),
        base_rev,
        size: content.len() as u64,
        content_hash: tessera_proto::ContentHash::from(blake3::hash(&content)),
        chunker: tessera_proto::block::CHUNKER.into(),
        blocks: rest.clone(),
        reuse,
    };
    let mut wrong = runs.clone();
    wrong[0].check = "00".repeat(16);
    let mut past = runs.clone();
    past[0].start = 1000;
    for (bad, base) in [
        (wrong, Some(rev)),
        (past, Some(rev)),
        (runs.clone(), None),
        (runs.clone(), Some(rev + 50)),
    ] {
        let e = alice.commit(&request(bad, base)).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "{e}");
        assert!(e.to_string().contains("whole block list"), "{e}");
        assert_eq!(alice.meta("/doc.bin").await.unwrap().rev, Some(rev));
    }
    // A run that claims billions of blocks of a file of any size is refused
    // before anything is sized by the claim (it used to abort the server).
    let mut huge = runs.clone();
    huge[0].count = u32::MAX;
    for size in [u64::MAX, content.len() as u64] {
        let mut claim = request(huge.clone(), Some(rev));
        claim.size = size;
        let e = alice.commit(&claim).await.unwrap_err();
        assert!(matches!(e.status(), Some(400 | 413)), "{e}");
    }
    assert_eq!(alice.meta("/doc.bin").await.unwrap().rev, Some(rev));
    let entry = alice.commit(&request(runs, Some(rev))).await.unwrap();
    assert_eq!(entry.rev, Some(rev + 1));
    let list = alice.block_list("/doc.bin", None).await.unwrap();
    assert_eq!(
        list.blocks
            .iter()
            .map(|b| (b.id, b.size))
            .collect::<Vec<_>>(),
        cut
    );
}

/// Streaming sync reads the block list an upload announced with its first
/// commit: shown to the account's own devices while the upload runs, to
/// nobody else, and gone once it commits.
async fn an_upload_under_way_shows_its_block_list_to_its_owner_until_it_commits(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let content = random_data(3 * MIB, 11);
    let cut: Vec<BlockRef> = tessera_proto::block::chunker(&content[..])
        .map(|c| {
            let c = c.unwrap();
            BlockRef {
                id: BlockId::of(&c.data),
                size: c.length as u64,
            }
        })
        .collect();
    let hash = tessera_proto::ContentHash::from(blake3::hash(&content));
    let request = CommitRequest {
        path: "/big/new.bin".into(),
        base_rev: None,
        size: content.len() as u64,
        content_hash: hash,
        chunker: tessera_proto::block::CHUNKER.into(),
        blocks: cut.clone(),
        reuse: Vec::new(),
    };
    assert!(alice.pending_list("/big/new.bin").await.unwrap().is_none());
    let e = alice.commit(&request).await.unwrap_err();
    assert_eq!(e.code(), Some(tessera_proto::ErrorCode::MissingBlocks));

    let list = alice.pending_list("/big/new.bin").await.unwrap().unwrap();
    assert_eq!(list.content_hash, hash);
    assert_eq!(list.size, content.len() as u64);
    assert_eq!(
        list.blocks
            .iter()
            .map(|b| (b.id, b.size))
            .collect::<Vec<_>>(),
        cut.iter().map(|b| (b.id, b.size)).collect::<Vec<_>>()
    );
    // Another account sees nothing there, as for any path of alice's.
    assert!(bob.pending_list("/big/new.bin").await.unwrap().is_none());
    let e = alice.pending_list("/big").await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    // Each block can be fetched once it is stored, before the commit.
    let mut at = 0;
    for b in &cut {
        let end = at + b.size as usize;
        let e = alice.get_block(&b.id).await.unwrap_err();
        assert_eq!(e.status(), Some(404), "{e}");
        alice
            .put_block(&b.id, BlockCodec::Raw, content[at..end].to_vec().into())
            .await
            .unwrap();
        assert_eq!(alice.get_block(&b.id).await.unwrap(), content[at..end]);
        at = end;
    }
    alice.commit(&request).await.unwrap();
    assert!(alice.pending_list("/big/new.bin").await.unwrap().is_none());
}
