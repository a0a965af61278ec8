//! The content hash of a block-protocol upload, taken as its blocks
//! arrive, so that the commit need not read the whole file back.
//!
//! A commit's `content_hash` is checked against the BLAKE3 of the blocks'
//! bytes in order. For a new file of many blocks that used to mean reading
//! every block back from the store at the commit (decrypt, decompress,
//! hash): about a quarter of the server's work on a large upload, done
//! after the last block while the client waits. Yet each block's bytes are
//! in memory, verified against their id, when they arrive. So the server
//! keeps a hasher for the upload and feeds it each block that comes next,
//! in one of two orders:
//!
//! - *Listed*: the early commit (refused with the blocks to send) gives
//!   the list. The chain follows it up to the first block that will not
//!   arrive (one the server holds already, or one listed before), and a
//!   block must have the size the list claims.
//! - *Numbered*: a client that sends blocks while it is still cutting the
//!   file (before it can list them) names its upload and each block's
//!   place in it (`?upload=&seq=`). The chain keeps a digest of the ids
//!   and sizes it hashed; the commit naming the upload takes the hash as
//!   far as that digest matches the start of its own list.
//!
//! Blocks that arrive a little ahead of their turn (several are sent at
//! once) are held, within a budget for each account and for all; anything
//! else stops the chain where it is, and the commit reads back only from
//! there. Only this instance's uploads are followed: a commit that reaches
//! another instance reads everything back, as before.
//!
//! Locks: a chain's lock is never waited for while the map's is held (a
//! chain may be hashing a block), nor the map's while a chain's is; chains
//! taken out of the map are marked and counted off after (`retire`). Held
//! bytes are counted in the chain and in the map, so nothing is counted
//! twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_proto::BlockId;

/// Uploads followed at once; the least recently fed is dropped first.
const MAX_CHAINS: usize = 64;
/// Uploads followed at once for one account.
const MAX_CHAINS_PER_USER: usize = 8;
/// How far ahead of its turn a block may arrive and still be held.
const WINDOW: usize = 8;
/// Bytes of blocks held ahead of their turn, for all uploads together.
const HELD_BUDGET: usize = 96 << 20;
/// The same, for one account's uploads.
const HELD_PER_USER: usize = 32 << 20;
/// Bytes one block's arrival may hash for runs of repeats of it in the
/// lists, over all the chains it feeds; the rest of a longer run is left
/// to the commit's read-back, which runs within the bounded pool of
/// content checks.
const RUN_CAP: u64 = 64 << 20;
/// An upload not fed for this long is given up.
const IDLE: Duration = Duration::from_secs(15 * 60);

/// Where a followed upload's hash stands when its commit asks.
pub struct Progress {
    /// Blocks of the list hashed, from the start.
    pub hashed: usize,
    pub hasher: blake3::Hasher,
}

/// Where a numbered upload's hash stands when its commit asks.
pub struct SequencedProgress {
    pub hashed: usize,
    /// [`ids_digest`] of the blocks hashed.
    pub ids_digest: [u8; 32],
    pub hasher: blake3::Hasher,
}

/// An upload's name as a client gives it: what it may be.
pub fn valid_upload_name(name: &str) -> bool {
    (8..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn digest_one(h: &mut blake3::Hasher, id: &BlockId, len: u64) {
    h.update(&id.0);
    h.update(&len.to_le_bytes());
}

/// What a numbered chain keeps of the blocks it hashed, for a commit to
/// compare with the start of its own list.
pub fn ids_digest<'a>(blocks: impl IntoIterator<Item = &'a (BlockId, u64)>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for (id, len) in blocks {
        digest_one(&mut h, id, *len);
    }
    *h.finalize().as_bytes()
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Listed(i64, [u8; 32]),
    Numbered(i64, String),
}

impl Key {
    fn user(&self) -> i64 {
        match self {
            Key::Listed(u, _) | Key::Numbered(u, _) => *u,
        }
    }
}

enum Order {
    /// The blocks (id, claimed size) the chain may hash, in order.
    Listed(Arc<[(BlockId, u64)]>),
    /// Numbered by the client; `ids` digests what was hashed.
    Numbered { ids: Box<blake3::Hasher> },
}

/// Where an arriving block goes in a chain.
enum Place {
    Due,
    Ahead(usize),
    Nowhere,
}

struct Chain {
    order: Order,
    next: usize,
    hasher: blake3::Hasher,
    /// Blocks that arrived ahead of their turn, verified, by position.
    ahead: HashMap<usize, (BlockId, Bytes)>,
    /// Bytes in `ahead`.
    held: usize,
    fed: Instant,
    /// Taken out of the map: nothing more is fed, held or counted.
    removed: bool,
    /// Stopped where it is (a block of another size than claimed, a long
    /// run): the commit reads back from `next`.
    stopped: bool,
}

impl Chain {
    fn new(order: Order) -> Self {
        Self {
            order,
            next: 0,
            hasher: blake3::Hasher::new(),
            ahead: HashMap::new(),
            held: 0,
            fed: Instant::now(),
            removed: false,
            stopped: false,
        }
    }

    fn place(&self, at: Option<usize>, id: BlockId, len: u64) -> Place {
        if self.removed || self.stopped {
            return Place::Nowhere;
        }
        match &self.order {
            Order::Listed(list) => {
                if list.get(self.next).is_some_and(|(due, _)| *due == id) {
                    return Place::Due;
                }
                let last = (self.next + WINDOW).min(list.len());
                (self.next + 1..last)
                    .find(|&i| list[i] == (id, len) && !self.ahead.contains_key(&i))
                    .map_or(Place::Nowhere, Place::Ahead)
            }
            Order::Numbered { .. } => match at {
                Some(seq) if seq == self.next => Place::Due,
                Some(seq)
                    if seq > self.next
                        && seq - self.next < WINDOW
                        && !self.ahead.contains_key(&seq) =>
                {
                    Place::Ahead(seq)
                }
                _ => Place::Nowhere,
            },
        }
    }

    /// Feeds `plain` (the block due next) and every block held ahead that
    /// follows it. Returns the bytes released from `ahead`.
    fn feed(&mut self, id: BlockId, plain: &[u8], run_budget: &mut u64) -> usize {
        self.hash_due(id, plain, run_budget);
        let mut released = 0;
        while !self.stopped {
            let Some((id, held)) = self.ahead.remove(&self.next) else {
                break;
            };
            released += held.len();
            self.hash_due(id, &held, run_budget);
        }
        // What is left ahead of a stopped chain is let go too, and so is
        // what a run of repeats went past (held for a place now behind).
        if self.stopped {
            released += self.ahead.drain().map(|(_, (_, b))| b.len()).sum::<usize>();
        } else {
            let next = self.next;
            let behind: Vec<usize> = self.ahead.keys().filter(|&&i| i < next).copied().collect();
            for i in behind {
                released += self.ahead.remove(&i).map_or(0, |(_, b)| b.len());
            }
        }
        self.held = self.held.saturating_sub(released);
        self.fed = Instant::now();
        released
    }

    /// Hashes `plain` where it is due, and again for each repeat of it
    /// that follows in the list while `run_budget` (shared by every chain
    /// one arrival feeds) lasts.
    fn hash_due(&mut self, id: BlockId, plain: &[u8], run_budget: &mut u64) {
        let len = plain.len() as u64;
        match &mut self.order {
            Order::Listed(list) => {
                let mut first = true;
                while let Some(&(due, claimed)) = list.get(self.next) {
                    if due != id {
                        break;
                    }
                    if claimed != len || (!first && *run_budget < len) {
                        self.stopped = true;
                        return;
                    }
                    if !first {
                        *run_budget -= len;
                    }
                    first = false;
                    self.hasher.update(plain);
                    self.next += 1;
                }
            }
            Order::Numbered { ids } => {
                self.hasher.update(plain);
                digest_one(ids, &id, len);
                self.next += 1;
            }
        }
    }
}

/// Numbered uploads whose chain was taken, remembered so a block of
/// theirs still in flight does not start a new one.
const TAKEN_REMEMBERED: usize = 256;

#[derive(Default)]
struct Chains {
    by_key: HashMap<Key, Arc<Mutex<Chain>>>,
    held: usize,
    held_by_user: HashMap<i64, usize>,
    taken: std::collections::VecDeque<Key>,
}

/// Chains out of the map, to be marked and counted off once its lock is
/// let go ([`RunningHashes::retire`]).
type Retired = Vec<(i64, Arc<Mutex<Chain>>)>;

impl Chains {
    /// Makes room for a chain, then adds it; returns it and the chains it
    /// pushed out.
    fn add(&mut self, key: Key, chain: Chain) -> (Arc<Mutex<Chain>>, Retired) {
        let mut out = self.take_idle();
        let user = key.user();
        if self.by_key.keys().filter(|k| k.user() == user).count() >= MAX_CHAINS_PER_USER {
            out.extend(self.take_oldest(Some(user)));
        }
        if self.by_key.len() >= MAX_CHAINS {
            out.extend(self.take_oldest(None));
        }
        let chain = Arc::new(Mutex::new(chain));
        self.by_key.insert(key, chain.clone());
        (chain, out)
    }

    /// When a chain was last fed, if it is not busy (a busy chain is not
    /// idle, and is never waited for under the map's lock).
    fn fed(chain: &Mutex<Chain>) -> Option<Instant> {
        chain.try_lock().ok().map(|c| c.fed)
    }

    fn take_idle(&mut self) -> Retired {
        let idle: Vec<Key> = self
            .by_key
            .iter()
            .filter(|(_, c)| Self::fed(c).is_some_and(|fed| fed.elapsed() > IDLE))
            .map(|(k, _)| k.clone())
            .collect();
        idle.iter().filter_map(|k| self.take_out(k)).collect()
    }

    /// The least recently fed chain (of `user_id` only, if given).
    fn take_oldest(&mut self, user_id: Option<i64>) -> Option<(i64, Arc<Mutex<Chain>>)> {
        let oldest = self
            .by_key
            .iter()
            .filter(|(k, _)| user_id.is_none_or(|u| u == k.user()))
            .filter_map(|(k, c)| Some((k.clone(), Self::fed(c)?)))
            .min_by_key(|(_, fed)| *fed)
            .map(|(k, _)| k)?;
        self.take_out(&oldest)
    }

    /// Takes the chain out of the map (its lock is not taken here).
    fn take_out(&mut self, key: &Key) -> Option<(i64, Arc<Mutex<Chain>>)> {
        let chain = self.by_key.remove(key)?;
        if let Key::Numbered(..) = key {
            if self.taken.len() >= TAKEN_REMEMBERED {
                self.taken.pop_front();
            }
            self.taken.push_back(key.clone());
        }
        Some((key.user(), chain))
    }

    fn release(&mut self, user: i64, len: usize) {
        self.held = self.held.saturating_sub(len);
        if let Some(mine) = self.held_by_user.get_mut(&user) {
            *mine = mine.saturating_sub(len);
            if *mine == 0 {
                self.held_by_user.remove(&user);
            }
        }
    }
}

/// Uploads being hashed as their blocks arrive (see the module docs).
#[derive(Clone, Default)]
pub struct RunningHashes {
    inner: Arc<Mutex<Chains>>,
}

impl RunningHashes {
    /// Starts following the upload of `list` (the early commit's blocks
    /// and claimed sizes) by `user_id`, keyed by the list's `key`, up to
    /// the first block that will not arrive: one not in `missing`, or one
    /// listed before (it is sent once). An upload already followed keeps
    /// its progress.
    pub fn begin(&self, user_id: i64, key: [u8; 32], list: &[(BlockId, u64)], missing: &[BlockId]) {
        let missing: HashSet<&BlockId> = missing.iter().collect();
        let mut seen = HashSet::new();
        let mut end = list.len();
        for (i, (id, _)) in list.iter().enumerate() {
            let repeat = i > 0 && list[i - 1].0 == *id;
            if !missing.contains(id) || (!repeat && !seen.insert(*id)) {
                end = i;
                break;
            }
        }
        if end < 2 {
            return; // nothing the commit would not do as cheaply
        }
        let retired = {
            let Ok(mut chains) = self.inner.lock() else {
                return;
            };
            let key = Key::Listed(user_id, key);
            if chains.by_key.contains_key(&key) {
                return;
            }
            chains
                .add(key, Chain::new(Order::Listed(list[..end].into())))
                .1
        };
        self.retire(retired);
    }

    /// Marks chains taken out of the map and counts off what they held:
    /// each chain's lock, then the map's, never both at once.
    fn retire(&self, retired: Retired) {
        for (user, chain) in retired {
            let held = match chain.lock() {
                Ok(mut c) => {
                    c.removed = true;
                    c.ahead.clear();
                    std::mem::take(&mut c.held)
                }
                Err(_) => 0,
            };
            self.release(user, held);
        }
    }

    /// Offers a block `user_id` sent, whose bytes `plain` were verified
    /// against `id`, to that account's listed uploads. Hashes in the
    /// caller's thread: call it off the reactor.
    pub fn offer(&self, user_id: i64, id: BlockId, plain: &Bytes) {
        let (listed, idle): (Vec<Arc<Mutex<Chain>>>, Retired) = match self.inner.lock() {
            Ok(mut chains) => {
                let idle = chains.take_idle();
                let listed = chains
                    .by_key
                    .iter()
                    .filter(|(k, _)| matches!(k, Key::Listed(u, _) if *u == user_id))
                    .map(|(_, c)| c.clone())
                    .collect();
                (listed, idle)
            }
            Err(_) => return,
        };
        self.retire(idle);
        let mut run_budget = RUN_CAP;
        for chain in listed {
            self.offer_to(user_id, &chain, None, id, plain, &mut run_budget);
        }
    }

    /// Offers block number `seq` of the upload `name` of `user_id`, whose
    /// bytes `plain` were verified against `id`. The chain starts with
    /// the first blocks; hashes in the caller's thread.
    pub fn offer_seq(&self, user_id: i64, name: &str, seq: u32, id: BlockId, plain: &Bytes) {
        let key = Key::Numbered(user_id, name.to_owned());
        let (chain, retired) = {
            let Ok(mut chains) = self.inner.lock() else {
                return;
            };
            match chains.by_key.get(&key) {
                Some(c) => (c.clone(), chains.take_idle()),
                // A block of an upload already committed starts nothing.
                None if (seq as usize) < WINDOW && !chains.taken.contains(&key) => chains.add(
                    key,
                    Chain::new(Order::Numbered {
                        ids: Box::default(),
                    }),
                ),
                None => return,
            }
        };
        self.retire(retired);
        let mut run_budget = RUN_CAP;
        self.offer_to(
            user_id,
            &chain,
            Some(seq as usize),
            id,
            plain,
            &mut run_budget,
        );
    }

    /// Feeds `plain` to `chain` if it is due, else holds it if it is a
    /// little ahead and the budgets allow. Never holds the chain's lock
    /// while taking the map's.
    fn offer_to(
        &self,
        user_id: i64,
        chain: &Mutex<Chain>,
        at: Option<usize>,
        id: BlockId,
        plain: &Bytes,
        run_budget: &mut u64,
    ) {
        let len = plain.len();
        let ahead = {
            let Ok(mut c) = chain.lock() else {
                return;
            };
            match c.place(at, id, len as u64) {
                Place::Due => {
                    let released = c.feed(id, plain, run_budget);
                    drop(c);
                    self.release(user_id, released);
                    return;
                }
                Place::Ahead(i) => i,
                Place::Nowhere => return,
            }
        };
        if !self.reserve(user_id, len) {
            return;
        }
        let Ok(mut c) = chain.lock() else {
            self.release(user_id, len);
            return;
        };
        // Looked at again: the chain may have moved, or been taken.
        let unused = match c.place(at, id, len as u64) {
            Place::Ahead(i) if i == ahead => {
                c.ahead.insert(i, (id, plain.clone()));
                c.held += len;
                c.fed = Instant::now();
                0
            }
            Place::Due => c.feed(id, plain, run_budget) + len,
            _ => len,
        };
        drop(c);
        self.release(user_id, unused);
    }

    /// Ends following the listed upload keyed `key` of `user_id` and says
    /// how far its hash got; none if it was not followed here.
    pub fn take(&self, user_id: i64, key: &[u8; 32]) -> Option<Progress> {
        let taken = self
            .inner
            .lock()
            .ok()?
            .take_out(&Key::Listed(user_id, *key))?;
        let chain = taken.1.clone();
        self.retire(vec![taken]);
        let chain = chain.lock().ok()?;
        Some(Progress {
            hashed: chain.next,
            hasher: chain.hasher.clone(),
        })
    }

    /// Ends following the numbered upload `name` of `user_id` and says how
    /// far its hash got; none if it was not followed here.
    pub fn take_seq(&self, user_id: i64, name: &str) -> Option<SequencedProgress> {
        let key = Key::Numbered(user_id, name.to_owned());
        let taken = self.inner.lock().ok()?.take_out(&key)?;
        let chain = taken.1.clone();
        self.retire(vec![taken]);
        let chain = chain.lock().ok()?;
        let Order::Numbered { ids } = &chain.order else {
            return None;
        };
        Some(SequencedProgress {
            hashed: chain.next,
            ids_digest: *ids.finalize().as_bytes(),
            hasher: chain.hasher.clone(),
        })
    }

    /// Uploads followed now (for tests and metrics).
    pub fn followed(&self) -> usize {
        self.inner.lock().map_or(0, |c| c.by_key.len())
    }

    fn reserve(&self, user_id: i64, len: usize) -> bool {
        for sweep in [false, true] {
            let idle = {
                let Ok(mut chains) = self.inner.lock() else {
                    return false;
                };
                let mine = chains.held_by_user.get(&user_id).copied().unwrap_or(0);
                if chains.held + len <= HELD_BUDGET && mine + len <= HELD_PER_USER {
                    chains.held += len;
                    *chains.held_by_user.entry(user_id).or_default() += len;
                    return true;
                }
                if sweep {
                    return false;
                }
                // Abandoned uploads (cancelled, never committed) may hold
                // what is short: let them go, then look again.
                chains.take_idle()
            };
            self.retire(idle);
        }
        false
    }

    fn release(&self, user_id: i64, len: usize) {
        if len > 0
            && let Ok(mut chains) = self.inner.lock()
        {
            chains.release(user_id, len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(n: usize) -> Vec<(BlockId, Bytes)> {
        (0..n)
            .map(|i| {
                let plain = Bytes::from(format!("block {i} ").repeat(100 + i));
                (BlockId::of(&plain), plain)
            })
            .collect()
    }

    fn listed(list: &[(BlockId, Bytes)]) -> (Vec<(BlockId, u64)>, Vec<BlockId>) {
        (
            list.iter().map(|(id, b)| (*id, b.len() as u64)).collect(),
            list.iter().map(|(id, _)| *id).collect(),
        )
    }

    fn whole_hash(list: &[(BlockId, Bytes)]) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        for (_, plain) in list {
            h.update(plain);
        }
        h.finalize()
    }

    #[test]
    fn blocks_arriving_a_little_out_of_order_hash_to_the_whole_file() {
        let list = blocks(10);
        let (listed, ids) = listed(&list);
        let hashes = RunningHashes::default();
        hashes.begin(7, [1; 32], &listed, &ids);
        for i in [1, 0, 3, 2, 5, 6, 4, 9, 8, 7] {
            hashes.offer(7, list[i].0, &list[i].1);
        }
        let done = hashes.take(7, &[1; 32]).expect("followed");
        assert_eq!(done.hashed, 10);
        assert_eq!(done.hasher.finalize(), whole_hash(&list));
        assert_eq!(hashes.inner.lock().unwrap().held, 0);
        assert_eq!(hashes.followed(), 0);
    }

    #[test]
    fn a_repeated_block_and_a_gap_leave_the_hash_where_the_gap_is() {
        let mut list = blocks(5);
        list.insert(2, list[1].clone()); // 0 1 1 2 3 4
        let (listed, mut ids) = listed(&list);
        // Block 2 of the original (position 3) will not come: the server
        // holds it already.
        ids.retain(|id| *id != list[3].0);
        let hashes = RunningHashes::default();
        hashes.begin(7, [2; 32], &listed, &ids);
        // Another account's block with the same id feeds nothing of it.
        hashes.offer(8, list[0].0, &list[0].1);
        assert!(hashes.take(8, &[2; 32]).is_none());
        hashes.offer(7, list[0].0, &list[0].1);
        hashes.offer(7, list[1].0, &list[1].1);
        // A block after it is not held for a chain that cannot go on.
        hashes.offer(7, list[5].0, &list[5].1);
        assert_eq!(hashes.inner.lock().unwrap().held, 0);
        let at = hashes.take(7, &[2; 32]).expect("followed");
        assert_eq!(at.hashed, 3);
        let mut rest = at.hasher;
        for (_, plain) in &list[3..] {
            rest.update(plain);
        }
        assert_eq!(rest.finalize(), whole_hash(&list));
        assert_eq!(hashes.inner.lock().unwrap().held, 0);
    }

    /// Copies of a repeated block held for places a run of it then went
    /// past are let go, not kept until the upload ends.
    #[test]
    fn copies_held_for_places_a_run_went_past_are_let_go() {
        let two = blocks(2);
        let mut list = vec![two[0].clone()];
        list.extend(std::iter::repeat_n(two[1].clone(), 4)); // 0 1 1 1 1
        let (listed, ids) = listed(&list);
        let hashes = RunningHashes::default();
        hashes.begin(7, [3; 32], &listed, &ids);
        for _ in 0..3 {
            hashes.offer(7, two[1].0, &two[1].1);
        }
        assert!(
            hashes.inner.lock().unwrap().held > 0,
            "held ahead of their turn"
        );
        hashes.offer(7, two[0].0, &two[0].1);
        assert_eq!(hashes.inner.lock().unwrap().held, 0);
        let at = hashes.take(7, &[3; 32]).expect("followed");
        assert_eq!(at.hashed, 5);
        assert_eq!(at.hasher.finalize(), whole_hash(&list));
    }

    /// One arrival hashes runs of repeats within one budget over all the
    /// uploads it feeds, however many lists repeat it.
    #[test]
    fn one_block_hashes_runs_of_it_within_one_budget_for_all_uploads() {
        let plain = Bytes::from(vec![9u8; 1 << 20]);
        let a = (BlockId::of(&plain), plain);
        let others = blocks(8);
        let hashes = RunningHashes::default();
        for (i, (other, _)) in others.iter().enumerate() {
            let mut list = vec![(a.0, 1u64 << 20); 40];
            list.push((*other, 1));
            hashes.begin(7, [i as u8; 32], &list, &[a.0, *other]);
        }
        hashes.offer(7, a.0, &a.1);
        let repeats: u64 = (0..others.len())
            .map(|i| hashes.take(7, &[i as u8; 32]).expect("followed").hashed as u64 - 1)
            .sum();
        assert!(repeats << 20 <= RUN_CAP, "{repeats} MiB of repeats hashed");
        assert!(
            repeats >= 39,
            "the first upload's run is hashed whole: {repeats}"
        );
    }

    #[test]
    fn numbered_blocks_hash_in_their_order_and_say_which_ids_they_were() {
        let list = blocks(6);
        let hashes = RunningHashes::default();
        // Block 4 never comes (the server held it): the hash stops there.
        for seq in [1u32, 0, 3, 2, 5] {
            let (id, plain) = &list[seq as usize];
            hashes.offer_seq(7, "upload-one", seq, *id, plain);
        }
        // Another account's upload of the same name is another upload.
        hashes.offer_seq(8, "upload-one", 4, list[4].0, &list[4].1);
        assert_eq!(hashes.take_seq(8, "upload-one").map(|p| p.hashed), Some(0));
        let at = hashes.take_seq(7, "upload-one").expect("followed");
        assert_eq!(at.hashed, 4);
        let sizes: Vec<(BlockId, u64)> = list.iter().map(|(id, b)| (*id, b.len() as u64)).collect();
        assert_eq!(at.ids_digest, ids_digest(&sizes[..4]));
        assert_ne!(at.ids_digest, ids_digest(&sizes[1..5]));
        let mut rest = at.hasher;
        for (_, plain) in &list[4..] {
            rest.update(plain);
        }
        assert_eq!(rest.finalize(), whole_hash(&list));
        assert_eq!(hashes.inner.lock().unwrap().held, 0, "block 5 was let go");
        assert!(hashes.take_seq(7, "upload-one").is_none());
        // A block of it still in flight after the commit starts nothing.
        hashes.offer_seq(7, "upload-one", 1, list[1].0, &list[1].1);
        assert!(hashes.take_seq(7, "upload-one").is_none());
        assert_eq!(hashes.inner.lock().unwrap().held, 0);
        // A chain starts only with the first blocks.
        hashes.offer_seq(7, "upload-two", 40, list[0].0, &list[0].1);
        assert!(hashes.take_seq(7, "upload-two").is_none());
        assert!(valid_upload_name("0123456789abcdef"));
        assert!(!valid_upload_name("short") && !valid_upload_name("has/slash-in-it"));
    }

    #[test]
    fn offers_takes_and_begins_at_once_neither_deadlock_nor_miscount() {
        let list = blocks(8);
        let (listed, ids) = listed(&list);
        let hashes = RunningHashes::default();
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let (hashes, list, listed, ids) = (&hashes, &list, &listed, &ids);
                s.spawn(move || {
                    for round in 0..500u32 {
                        let key = [(round % 4) as u8; 32];
                        hashes.begin(1, key, listed, ids);
                        for i in (0..8).rev() {
                            hashes.offer(1, list[i].0, &list[i].1);
                            hashes.offer_seq(1, "numbered-upload", i as u32, list[i].0, &list[i].1);
                        }
                        if (round + t) % 3 == 0 {
                            hashes.take(1, &key);
                            hashes.take_seq(1, "numbered-upload");
                        }
                    }
                });
            }
        });
        for k in 0..4u8 {
            hashes.take(1, &[k; 32]);
        }
        hashes.take_seq(1, "numbered-upload");
        let chains = hashes.inner.lock().unwrap();
        assert_eq!(chains.held, 0);
        assert!(chains.held_by_user.is_empty());
    }

    #[test]
    fn uploads_followed_are_bounded_per_account_and_in_all() {
        let list = blocks(2);
        let (listed, ids) = listed(&list);
        let hashes = RunningHashes::default();
        for k in 0..20u8 {
            hashes.begin(1, [k; 32], &listed, &ids);
        }
        assert_eq!(hashes.followed(), MAX_CHAINS_PER_USER);
        for user in 2..100 {
            hashes.begin(user, [0; 32], &listed, &ids);
        }
        assert_eq!(hashes.followed(), MAX_CHAINS);
        // A one-block file needs no chain, nor one whose first block the
        // server holds.
        hashes.begin(500, [200; 32], &listed[..1], &ids);
        assert!(hashes.take(500, &[200; 32]).is_none());
        hashes.begin(500, [201; 32], &listed, &ids[1..]);
        assert!(hashes.take(500, &[201; 32]).is_none());
    }

    #[test]
    fn a_block_of_another_size_than_claimed_stops_the_chain_and_frees_what_it_held() {
        let list = blocks(4);
        let (mut listed, ids) = listed(&list);
        listed[1].1 += 1; // the list lies about block 1's size
        let hashes = RunningHashes::default();
        hashes.begin(7, [3; 32], &listed, &ids);
        hashes.offer(7, list[2].0, &list[2].1);
        assert!(hashes.inner.lock().unwrap().held > 0);
        hashes.offer(7, list[0].0, &list[0].1);
        hashes.offer(7, list[1].0, &list[1].1);
        assert_eq!(hashes.inner.lock().unwrap().held, 0);
        hashes.offer(7, list[3].0, &list[3].1);
        let at = hashes.take(7, &[3; 32]).expect("followed");
        assert_eq!(at.hashed, 1, "only block 0 is vouched for");
        assert!(hashes.inner.lock().unwrap().held_by_user.is_empty());
    }
}
