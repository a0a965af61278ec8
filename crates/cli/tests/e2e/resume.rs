//! `tessera get`, `tessera put` and `tessera sync --once` interrupted (the
//! process killed midway) and run again: they carry on from what was done, and never install
//! wrong bytes. The binary talks to the server through a relay that counts
//! the bytes each way, records request heads, and can hold traffic after a
//! budget, so the kill lands midway without depending on timing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::process::{command, finish_async};
use crate::common::relay::Relay;
use crate::common::{Backend, TestServer, dir_bytes, no_progress, random_data};
use tessera_client::Remote;
use tessera_client::transfer::{part_paths, upload_file};
use tessera_proto::BlockId;
use tessera_proto::block::chunker;
const MIB: usize = 1 << 20;

/// A server, a relay before it, and a config folder logged in as alice
/// through the relay.
struct Setup {
    s: TestServer,
    relay: Arc<Relay>,
    alice: Remote,
    cfg: PathBuf,
}

async fn setup() -> Setup {
    let s = TestServer::start(Backend::Sqlite).await;
    let alice = s.user("alice").await;
    let relay = Relay::start(&s.url).await;
    let cfg = s.scratch("cfg");
    let out = run(
        &cfg,
        &[
            "login",
            "--server",
            &relay.url,
            "--user",
            "alice",
            "--password-stdin",
        ],
        Some("alice-password\n"),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    Setup {
        s,
        relay,
        alice,
        cfg,
    }
}

async fn run(cfg: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    finish_async(command(cfg, args), stdin).await
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `measure` is at least `min` and has not moved for a while
/// (the relay is holding the traffic); returns that value.
async fn wait_stalled(child: &mut Child, min: u64, measure: impl AsyncFn() -> u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut last, mut still) = (u64::MAX, 0);
    loop {
        assert!(Instant::now() < deadline, "the transfer never stalled");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the command ended before it was interrupted: {status}");
        }
        let now = measure().await;
        if now >= min && now == last {
            still += 1;
            if still >= 10 {
                return last;
            }
        } else {
            still = 0;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`wait_stalled`], then kills `child` outright.
async fn kill_when_stalled(mut child: Child, min: u64, measure: impl AsyncFn() -> u64) -> u64 {
    let held = wait_stalled(&mut child, min, measure).await;
    child.kill().unwrap();
    child.wait().unwrap();
    held
}

fn len_of(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

async fn put_remote(alice: &Remote, s: &TestServer, path: &str, data: &[u8], name: &str) {
    let local = s.scratch(name);
    std::fs::write(&local, data).unwrap();
    upload_file(alice, &local, path, None, no_progress())
        .await
        .unwrap();
}

/// Starts `tessera get REMOTE target` with the relay holding everything
/// after `budget` bytes, and kills it once the part file stops growing.
/// Returns the part's size.
async fn interrupted_get(t: &Setup, remote: &str, target: &Path, budget: u64) -> u64 {
    t.relay.reset();
    t.relay.down_limit.store(budget, Ordering::SeqCst);
    let child = command(&t.cfg, &["get", remote, target.to_str().unwrap()])
        .spawn()
        .unwrap();
    let (part, _) = part_paths(target);
    let held = kill_when_stalled(child, 1 << 20, async || len_of(&part)).await;
    // Let the relay flush what it held for the dead process, then count
    // afresh for the next run.
    t.relay.reset();
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.relay.reset();
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_get_resumes_with_a_range_and_ends_byte_identical() {
    let t = setup().await;
    let data = random_data(40 * MIB, 1);
    put_remote(&t.alice, &t.s, "/big.bin", &data, "big.src").await;
    let target = t.s.scratch("big.bin");
    let (part, note) = part_paths(&target);

    let held = interrupted_get(&t, "/big.bin", &target, 16 << 20).await;
    assert!(!target.exists(), "nothing appears at the target");
    assert!(part.exists() && note.exists(), "the part and its note stay");
    assert_eq!(len_of(&part), held);
    assert!(held > 0 && held < data.len() as u64, "held {held}");
    assert_eq!(std::fs::read(&part).unwrap(), data[..held as usize]);

    let out = run(&t.cfg, &["get", "/big.bin", target.to_str().unwrap()], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&target).unwrap(), data);
    assert!(
        !part.exists() && !note.exists(),
        "a finished get leaves no part"
    );

    // The request asked for exactly the rest, and only the rest came back
    // over the wire (plus headers and the metadata request).
    let heads = t.relay.heads().join("\n").to_ascii_lowercase();
    assert!(
        heads.contains(&format!("range: bytes={held}-")),
        "no range request for the rest: {heads}"
    );
    assert!(heads.contains("if-range: \""), "{heads}");
    let rest = data.len() as u64 - held;
    let down = t.relay.down.load(Ordering::SeqCst);
    assert!(
        down >= rest && down < rest + (64 << 10),
        "the re-run fetched {down} bytes for a rest of {rest}"
    );
    assert!(
        stdout(&out).contains(&format!("resumed after {held} bytes, fetched {rest}")),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_of_content_since_replaced_starts_over() {
    let t = setup().await;
    let old = random_data(40 * MIB, 2);
    put_remote(&t.alice, &t.s, "/f.bin", &old, "old.src").await;
    let target = t.s.scratch("f.bin");
    let (part, note) = part_paths(&target);
    let held = interrupted_get(&t, "/f.bin", &target, 16 << 20).await;
    assert!(held > 0);

    let new = random_data(30 * MIB, 3);
    put_remote(&t.alice, &t.s, "/f.bin", &new, "new.src").await;

    let out = run(&t.cfg, &["get", "/f.bin", target.to_str().unwrap()], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&target).unwrap(), new);
    assert!(!part.exists() && !note.exists());
    // It did ask to resume, and the server answered the whole new file.
    let heads = t.relay.heads().join("\n").to_ascii_lowercase();
    assert!(heads.contains(&format!("range: bytes={held}-")), "{heads}");
    assert!(t.relay.down.load(Ordering::SeqCst) >= new.len() as u64);
    assert!(!stdout(&out).contains("resumed"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_part_fails_the_hash_check_and_is_removed() {
    let t = setup().await;
    let data = random_data(40 * MIB, 4);
    put_remote(&t.alice, &t.s, "/d.bin", &data, "d.src").await;
    let target = t.s.scratch("d.bin");
    let (part, note) = part_paths(&target);
    let held = interrupted_get(&t, "/d.bin", &target, 16 << 20).await;
    assert!(held > 1000);

    let mut bytes = std::fs::read(&part).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(&part, &bytes).unwrap();
    drop(bytes);

    let out = run(&t.cfg, &["get", "/d.bin", target.to_str().unwrap()], None).await;
    assert!(!out.status.success(), "wrong bytes were accepted");
    assert!(stderr(&out).contains("arrived damaged"), "{}", stderr(&out));
    assert!(!target.exists(), "no wrong file appears at the target");
    assert!(!part.exists() && !note.exists(), "the damaged part is gone");

    let out = run(&t.cfg, &["get", "/d.bin", target.to_str().unwrap()], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&target).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_put_sends_only_the_missing_blocks_when_run_again() {
    let t = setup().await;
    let data = random_data(40 * MIB, 5);
    let local = t.s.scratch("up.bin");
    std::fs::write(&local, &data).unwrap();

    t.relay.up_limit.store(20 << 20, Ordering::SeqCst);
    let child = command(&t.cfg, &["put", local.to_str().unwrap(), "/up.bin"])
        .spawn()
        .unwrap();
    let s = &t.s;
    kill_when_stalled(child, 1, async || s.store_objects().await.len() as u64).await;
    // Let the server finish any block whose body had fully arrived, then
    // count afresh for the next run.
    t.relay.reset();
    tokio::time::sleep(Duration::from_millis(500)).await;
    t.relay.reset();
    // The blocks the server holds, as the next run will ask. An object
    // written for a request the kill cut off before its record (a slow
    // store can finish a write after the client is gone) holds nothing
    // the server counts: it is left for collection.
    let ids: Vec<BlockId> = chunker(&data[..])
        .map(|c| BlockId::of(&c.unwrap().data))
        .collect();
    let stored = ids.len() - t.alice.missing(&ids).await.unwrap().len();
    let unrecorded = s.store_objects().await.len() - stored;
    let store_before = s.store_bytes().await;
    match t.alice.meta("/up.bin").await {
        Ok(e) => assert!(e.pending, "the interrupted put committed"),
        Err(e) => assert_eq!(e.status(), Some(404), "{e}"),
    }

    let out = run(&t.cfg, &["put", local.to_str().unwrap(), "/up.bin"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    let (sent, total) = sent_of(&line);
    assert_eq!(total, ids.len(), "{line}");
    assert!(stored >= 1 && stored < total, "{stored} of {total} stored");
    assert_eq!(sent, total - stored, "{line}");
    assert_eq!(s.store_objects().await.len(), total + unrecorded);
    assert!(t.alice.missing(&ids).await.unwrap().is_empty());
    // Only the missing blocks crossed the wire and landed in the store.
    let grew = s.store_bytes().await - store_before;
    let up = t.relay.up.load(Ordering::SeqCst);
    assert!(grew < data.len() as u64, "the store grew by {grew}");
    assert!(up < grew + (256 << 10), "sent {up} bytes for {grew} stored");

    let resp = t.alice.download("/up.bin", None).await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), data);
}

/// A sync killed (kill -9) midway through a large download, held there by
/// the relay: no partial file appears at the target, and the next run
/// finishes with the right bytes and clears the interrupted download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_killed_mid_download_leaves_no_partial_file() {
    let t = setup().await;
    let data = random_data(40 * MIB, 8);
    put_remote(&t.alice, &t.s, "/big.bin", &data, "big.src").await;
    let folder = t.s.scratch("synced");
    std::fs::create_dir_all(&folder).unwrap();
    let (target, tmp) = (folder.join("big.bin"), folder.join(".tessera/tmp"));

    t.relay.reset();
    // Blocks come down four at a time and are written whole, in order:
    // enough for the first few to land, not for the file.
    t.relay.down_limit.store(28 << 20, Ordering::SeqCst);
    let child = command(&t.cfg, &["sync", folder.to_str().unwrap(), "--once"])
        .spawn()
        .unwrap();
    let held = kill_when_stalled(child, 1, async || dir_bytes(&tmp)).await;
    t.relay.reset();
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.relay.reset();
    println!("killed with {held} bytes of the download on disk");
    assert!(held < data.len() as u64, "held {held}");
    assert!(
        !target.exists(),
        "a partial file appeared at the target path"
    );

    let out = run(&t.cfg, &["sync", folder.to_str().unwrap(), "--once"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(&target).unwrap() == data, "the bytes differ");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

/// Ctrl-C to a running `tessera sync` while its download is held midway:
/// the transfer in hand gets its grace, is abandoned when the grace runs
/// out, and the daemon exits cleanly leaving no partial file; the next run
/// finishes the download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_a_held_download_stops_the_daemon_within_its_grace() {
    let t = setup().await;
    let data = random_data(40 * MIB, 9);
    put_remote(&t.alice, &t.s, "/big.bin", &data, "big.src").await;
    let folder = t.s.scratch("daemon");
    std::fs::create_dir_all(&folder).unwrap();
    let (target, tmp) = (folder.join("big.bin"), folder.join(".tessera/tmp"));

    t.relay.reset();
    t.relay.down_limit.store(28 << 20, Ordering::SeqCst);
    let mut child = command(&t.cfg, &["sync", folder.to_str().unwrap()])
        .spawn()
        .unwrap();
    wait_stalled(&mut child, 1, async || dir_bytes(&tmp)).await;
    let pid = i32::try_from(child.id()).unwrap();
    let sent = Instant::now();
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, libc::SIGINT) };
    assert_eq!(rc, 0, "kill failed");
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output());
    let out = tokio::time::timeout(Duration::from_secs(10), waited)
        .await
        .expect("Ctrl-C stops the daemon within 10 s")
        .unwrap()
        .unwrap();
    println!(
        "Ctrl-C during a held download: stopped after {:?}",
        sent.elapsed()
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains("Ctrl-C: stopping; letting the transfer in hand finish (up to 3 s)"),
        "{said}"
    );
    assert!(said.contains("abandoned the unfinished transfer"), "{said}");
    assert!(stdout(&out).contains("stopped syncing"), "{}", stdout(&out));
    assert!(
        !target.exists(),
        "a partial file appeared at the target path"
    );

    t.relay.reset();
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.relay.reset();
    let out = run(&t.cfg, &["sync", folder.to_str().unwrap(), "--once"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(&target).unwrap() == data, "the bytes differ");
}

/// Reads "sent K of N blocks" from `tessera put`'s report.
fn sent_of(line: &str) -> (usize, usize) {
    let rest = line.split("sent ").nth(1).expect("a put report");
    let words: Vec<&str> = rest.split_whitespace().collect();
    (words[0].parse().unwrap(), words[2].parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_honours_a_range_only_while_if_range_names_its_content() {
    let s = TestServer::start(Backend::Sqlite).await;
    let alice = s.user("alice").await;
    put_remote(&alice, &s, "/x.bin", &random_data(100_000, 6), "x1.src").await;
    let old_etag = format!(
        "\"{}\"",
        alice.meta("/x.bin").await.unwrap().content_hash.unwrap()
    );
    let data = random_data(90_000, 7);
    put_remote(&alice, &s, "/x.bin", &data, "x2.src").await;
    let etag = format!(
        "\"{}\"",
        alice.meta("/x.bin").await.unwrap().content_hash.unwrap()
    );

    let get = |if_range: Option<String>| {
        let mut req = alice
            .request(reqwest::Method::GET, "/files/content")
            .query(&[("path", "/x.bin")])
            .header(reqwest::header::RANGE, "bytes=1000-");
        if let Some(v) = if_range {
            req = req.header(reqwest::header::IF_RANGE, v);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.bytes().await.unwrap())
        }
    };
    let (status, body) = get(Some(etag.clone())).await;
    assert_eq!((status, &body[..]), (206, &data[1000..]));
    let (status, body) = get(None).await;
    assert_eq!((status, &body[..]), (206, &data[1000..]));
    for stale in [
        old_etag,
        format!("W/{etag}"),
        "Mon, 30 Nov 2026 08:00:00 GMT".into(),
    ] {
        let (status, body) = get(Some(stale.clone())).await;
        assert_eq!((status, &body[..]), (200, &data[..]), "If-Range: {stale}");
    }
}
