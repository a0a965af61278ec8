//! Request and response bodies of the HTTP API under `/api/v1`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{BlockId, ContentHash};

/// What the server tells clients about itself, including the block rules
/// they must cut with.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServerInfo {
    pub version: String,
    pub chunker: String,
    pub min_block: u64,
    pub avg_block: u64,
    pub max_block: u64,
    pub max_file_size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    /// A name for this device, shown in conflicted copies and device lists.
    pub device: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    /// Bearer token for this device; shown once, stored hashed by the server.
    pub token: String,
    pub username: String,
    pub device: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Folder,
}

/// One file or folder.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Entry {
    /// Stable id: survives renames and moves.
    pub id: String,
    pub path: String,
    pub name: String,
    pub kind: EntryKind,
    /// Current revision (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<ContentHash>,
    /// Milliseconds since the Unix epoch.
    pub modified_ms: i64,
    /// True while new content is being uploaded ("syncing"); `rev` is the
    /// last complete revision (0: none yet).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
    /// Set on a shared folder's mount point: the caller's role in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<ShareRole>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ListResponse {
    pub path: String,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct PathQuery {
    /// An absolute path: `/`, or `/`-separated names.
    #[param(pattern = "^/", example = "/docs")]
    #[schema(pattern = "^/", example = "/docs")]
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    #[param(pattern = "^/", example = "/docs/a.txt")]
    pub path: String,
    /// A past revision; the current one when absent.
    #[serde(default)]
    pub rev: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    #[param(pattern = "^/", example = "/docs/b.txt")]
    pub path: String,
    /// The revision this content replaces: 0 means "the file must not exist",
    /// absent means "replace whatever is there".
    #[serde(default)]
    pub base_rev: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeleteRequest {
    #[schema(pattern = "^/", example = "/docs/old.txt")]
    pub path: String,
    /// For a file: refuse (409) unless it is still at this revision, so a
    /// delete never discards an edit it has not seen.
    #[serde(default)]
    pub base_rev: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MoveRequest {
    #[schema(pattern = "^/", example = "/docs/move-me.txt")]
    pub from: String,
    #[schema(pattern = "^/", example = "/docs/moved.txt")]
    pub to: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RestoreRequest {
    #[schema(pattern = "^/", example = "/docs/a.txt")]
    pub path: String,
    #[schema(example = 1)]
    pub rev: i64,
}

/// Pins a revision (kept whatever the retention schedule says) or unpins it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PinRequest {
    #[schema(pattern = "^/", example = "/docs/a.txt")]
    pub path: String,
    #[schema(example = 1)]
    pub rev: i64,
    /// False unpins.
    #[serde(default = "yes")]
    pub pinned: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MissingRequest {
    pub ids: Vec<BlockId>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MissingResponse {
    /// The ids you must upload before a commit may reference them.
    pub missing: Vec<BlockId>,
}

/// How the body of a block upload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum BlockCodec {
    /// The plaintext block as is.
    Raw,
    /// One zstd frame that decompresses to the block.
    #[default]
    Zstd,
}

#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BlockUploadQuery {
    #[serde(default)]
    pub codec: BlockCodec,
    /// A name the client gave the upload this block belongs to (8 to 64
    /// letters, digits, `-` or `_`), with `seq`, the block's place in the
    /// file (from 0): blocks sent while the file is still being cut are
    /// hashed as they come, so the commit naming the upload need not read
    /// them back. Optional.
    #[serde(default)]
    pub upload: Option<String>,
    #[serde(default)]
    pub seq: Option<u32>,
}

/// `POST /files/commit?upload=`: the upload (see [`BlockUploadQuery`])
/// whose numbered blocks this commit lists.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CommitQuery {
    #[serde(default)]
    pub upload: Option<String>,
}

/// A block sent as an rsync delta against a block the server holds
/// (`PUT /blocks/{id}/delta`): the body is the delta, encoded as `codec`
/// says, made against the signature from `GET /blocks/{base}/signature`.
#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeltaUploadQuery {
    /// The block the delta was made against; you must hold it.
    pub base: BlockId,
    #[serde(default)]
    pub codec: BlockCodec,
}

/// `GET /blocks/{id}/patch`: the block as a patch against `base`, a block
/// the asking device still has, when that is smaller than the block.
#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PatchQuery {
    pub base: BlockId,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BlockRef {
    pub id: BlockId,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommitRequest {
    #[schema(pattern = "^/")]
    pub path: String,
    /// See [`UploadQuery::base_rev`].
    #[serde(default)]
    pub base_rev: Option<i64>,
    pub size: u64,
    pub content_hash: ContentHash,
    /// Must equal the server's `chunker` (see `/api/v1/info`).
    pub chunker: String,
    /// The file's blocks in order, less the stretches given by `reuse`.
    pub blocks: Vec<BlockRef>,
    /// Stretches of revision `base_rev`'s block list that the new revision
    /// keeps, so an edit of a large file need not list every block again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reuse: Vec<Reuse>,
}

/// Blocks `start..start + count` of the base revision, placed so that the
/// first of them is block `at` of the new revision. `check` is
/// [`Reuse::check_of`] those blocks' ids: a list that does not match is
/// refused (send the whole list then), never guessed at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reuse {
    pub at: u32,
    pub start: u32,
    pub count: u32,
    /// 32 hex digits.
    pub check: String,
}

/// Places in the base where a run may start that [`Reuse::find`] tries.
const MAX_CANDIDATES: usize = 8;

impl Reuse {
    /// The first 16 bytes, in hex, of the BLAKE3 hash of the ids in order.
    pub fn check_of<'a>(ids: impl IntoIterator<Item = &'a BlockId>) -> String {
        let mut hasher = blake3::Hasher::new();
        for id in ids {
            hasher.update(&id.0);
        }
        hasher.finalize().as_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The runs of `new` (in order) found in `base` (in order), longest
    /// first from each position, of at least `min` blocks; returned with
    /// the blocks of `new` that no run covers.
    pub fn find(base: &[BlockRef], new: &[BlockRef], min: usize) -> (Vec<Reuse>, Vec<BlockRef>) {
        let mut at_in_base: std::collections::HashMap<(BlockId, u64), Vec<usize>> =
            std::collections::HashMap::new();
        for (j, b) in base.iter().enumerate() {
            at_in_base.entry((b.id, b.size)).or_default().push(j);
        }
        let (mut runs, mut rest) = (Vec::new(), Vec::new());
        let mut i = 0;
        while i < new.len() {
            // A block repeated all over (a file of zeros) would make every
            // position a candidate: a few are enough to find a long run.
            let best = at_in_base
                .get(&(new[i].id, new[i].size))
                .into_iter()
                .flatten()
                .take(MAX_CANDIDATES)
                .map(|&j| {
                    let len = new[i..]
                        .iter()
                        .zip(&base[j..])
                        .take_while(|(n, b)| n.id == b.id && n.size == b.size)
                        .count();
                    (j, len)
                })
                .max_by_key(|&(_, len)| len);
            match best {
                Some((j, len)) if len >= min.max(1) => {
                    runs.push(Reuse {
                        at: i as u32,
                        start: j as u32,
                        count: len as u32,
                        check: Reuse::check_of(base[j..j + len].iter().map(|b| &b.id)),
                    });
                    i += len;
                }
                _ => {
                    rest.push(new[i].clone());
                    i += 1;
                }
            }
        }
        (runs, rest)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Revision {
    pub rev: i64,
    pub size: u64,
    pub content_hash: ContentHash,
    pub created_ms: i64,
    pub device: String,
    /// Kept whatever the retention schedule says.
    #[serde(default)]
    pub pinned: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevisionsResponse {
    pub path: String,
    pub revisions: Vec<Revision>,
}

/// Answer to `GET /api/v1/files/blocks`: how to assemble a revision from
/// blocks, so a sync client can reuse the blocks it already holds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BlockListResponse {
    pub entry: Entry,
    pub chunker: String,
    pub blocks: Vec<BlockRef>,
}

/// Answer to `GET /api/v1/files/pending`: the block list an upload under
/// way announced, so another device can fetch its blocks as they are
/// stored (each is fetchable once uploaded) and have the file ready when
/// the commit comes. Only a hint: the file is not there until it commits.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PendingListResponse {
    pub path: String,
    pub size: u64,
    pub content_hash: ContentHash,
    pub chunker: String,
    pub blocks: Vec<BlockRef>,
}

/// What a journal entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Mkdir,
    Commit,
    Move,
    Delete,
    Restore,
    /// An upload started: the file shows as syncing until its commit.
    Pending,
    /// An upload never finished; the pending mark is gone.
    PendingExpired,
}

/// A stored kind name that is none of [`ChangeKind`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown change kind `{0}`")]
pub struct UnknownChangeKind(pub String);

impl ChangeKind {
    pub const ALL: [ChangeKind; 7] = [
        ChangeKind::Mkdir,
        ChangeKind::Commit,
        ChangeKind::Move,
        ChangeKind::Delete,
        ChangeKind::Restore,
        ChangeKind::Pending,
        ChangeKind::PendingExpired,
    ];

    /// The name the journal stores and the API sends (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Mkdir => "mkdir",
            ChangeKind::Commit => "commit",
            ChangeKind::Move => "move",
            ChangeKind::Delete => "delete",
            ChangeKind::Restore => "restore",
            ChangeKind::Pending => "pending",
            ChangeKind::PendingExpired => "pending_expired",
        }
    }
}

impl std::str::FromStr for ChangeKind {
    type Err = UnknownChangeKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownChangeKind(s.to_owned()))
    }
}

/// One entry of a namespace's journal.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Change {
    pub seq: i64,
    pub kind: ChangeKind,
    /// The node's stable id.
    pub id: String,
    /// The path after the change (for a delete: where it was).
    pub path: String,
    /// For a move: where it was before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    /// Whether the node is a file or a folder.
    pub node: EntryKind,
    /// For files: the revision, size and content this change left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<ContentHash>,
    pub device: String,
    pub time_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangesQuery {
    /// Where to continue from; absent means the beginning of the journal.
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChangesResponse {
    pub changes: Vec<Change>,
    /// Pass this back to continue after the last change returned.
    pub cursor: String,
    /// True when more changes wait past this page.
    pub has_more: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CursorResponse {
    pub cursor: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PollQuery {
    pub cursor: String,
    /// Seconds to hold the request (default 60, clamped to 1..=300).
    #[serde(default)]
    #[param(minimum = 1, maximum = 300)]
    pub timeout: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PollResponse {
    /// True when the journal moved past the cursor: fetch `/changes`.
    pub changes: bool,
    /// When set, wait this many seconds before polling again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DevicePresence {
    pub device: String,
    /// Long polls this device holds now.
    pub connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PresenceResponse {
    pub devices: Vec<DevicePresence>,
}

/// One signed-in device of the caller's (a session: signing in again makes
/// another).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceInfo {
    /// What `DELETE /api/v1/devices/{id}` names it by.
    pub id: String,
    /// The name it signed in with.
    pub name: String,
    /// The program it signed in with (its User-Agent), when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    pub signed_in_ms: i64,
    /// When it was last heard from (to a few minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<i64>,
    /// Long polls it holds now: a running sync holds one.
    pub polls: u64,
    /// The device asking.
    pub current: bool,
}

/// `GET /api/v1/devices`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceList {
    pub devices: Vec<DeviceInfo>,
}

/// `POST /api/v1/account/password`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
    /// Sign out this device too (every other one always is).
    #[serde(default)]
    pub sign_out_here: bool,
}

/// The answer to a password change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PasswordChanged {
    /// How many devices were signed out.
    pub signed_out: u64,
}

/// Answer to `GET /api/v1/search`: entries whose name holds the text,
/// shortest names first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchResponse {
    pub entries: Vec<Entry>,
    /// More matched than were listed: a longer text narrows them down.
    pub more: bool,
}

/// An account as an administrator sees it (`GET /api/v1/admin/users`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Account {
    pub name: String,
    pub admin: bool,
    /// `active`, `disabled`, `deleted` (restorable until `purge_after_ms`)
    /// or `purging`.
    pub state: AccountState,
    pub created_ms: i64,
    pub deleted_ms: Option<i64>,
    /// When a deleted account's files go for good; none if they are kept
    /// until purged by hand (the server keeps its trash for ever).
    pub purge_after_ms: Option<i64>,
    pub used_bytes: u64,
    pub quota_bytes: Option<u64>,
    /// Signed-in devices.
    pub devices: u64,
    pub last_seen_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountState {
    Active,
    Disabled,
    Deleted,
    Purging,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountList {
    pub users: Vec<Account>,
}

/// An account an administrator creates.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NewAccount {
    pub name: String,
    pub password: String,
    #[serde(default)]
    pub admin: bool,
}

/// A password an administrator sets for someone.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NewPassword {
    pub password: String,
}

/// Many commits in one request and one transaction (small files).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommitBatchRequest {
    pub commits: Vec<CommitRequest>,
}

/// Names along the paths of one batch request (folders or commits), in
/// all: the server looks each up, and may make a folder for each, inside
/// one write transaction, so a batch of very deep paths is refused rather
/// than left to hold the write lock. Clients split their batches by it.
pub const MAX_BATCH_SEGMENTS: usize = 64_000;

/// The names along `path` (`/a/b/c` has 3).
pub fn path_segments(path: &str) -> usize {
    path.split('/').filter(|s| !s.is_empty()).count()
}

/// Many folders made in one request and one transaction (a new tree).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MkdirBatchRequest {
    /// Absolute paths; a folder's parents are made as needed.
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MkdirBatchResponse {
    /// In the order of the request; a path that exists already answers
    /// `already_exists`.
    pub results: Vec<CommitResult>,
}

/// One item's outcome: `entry` on success, `error` otherwise.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommitResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::ErrorDetail>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommitBatchResponse {
    /// In the order of the request.
    pub results: Vec<CommitResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PackResponse {
    pub blocks: Vec<BlockRef>,
}

/// Blocks to fetch in one request; the answer is a pack body (see
/// `tessera_proto::pack`) with each block as stored (zstd or raw).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FetchBlocksRequest {
    pub ids: Vec<BlockId>,
}

/// Something in the trash.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TrashEntry {
    /// Pass this to restore it.
    pub id: String,
    /// Where it was when it was deleted.
    pub path: String,
    pub kind: EntryKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    pub deleted_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TrashResponse {
    pub entries: Vec<TrashEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TrashRestoreRequest {
    pub id: String,
    /// Where to put it back; its old path when absent.
    #[serde(default)]
    pub to: Option<String>,
}

/// Removes trash entries for good: one (`id`) or all (`all: true`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct TrashPurgeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// Only what was deleted at or before this time (ms since the epoch):
    /// the newest `deleted_ms` of the list the user confirmed, so nothing
    /// deleted since, on another device, goes with it unseen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_upto_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_kind_names_match_the_wire_names() {
        for kind in ChangeKind::ALL {
            let wire = serde_json::to_value(kind).unwrap();
            assert_eq!(wire, serde_json::Value::from(kind.as_str()));
            assert_eq!(kind.as_str().parse::<ChangeKind>(), Ok(kind));
        }
    }

    #[test]
    fn an_unknown_change_kind_is_refused() {
        assert_eq!(
            "rename".parse::<ChangeKind>(),
            Err(UnknownChangeKind("rename".into()))
        );
        assert!("".parse::<ChangeKind>().is_err());
        assert!("Commit".parse::<ChangeKind>().is_err());
    }
}

/// What a worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Waiting for its next run.
    Idle,
    /// In a step.
    Busy,
    /// Its last step failed; it will try again after a back-off.
    Failed,
    /// Another instance holds its lease and runs it; this one takes over
    /// if that one stops.
    Standby,
}

/// A server worker's status (`GET /admin/workers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerStatus {
    pub name: String,
    pub state: WorkerState,
    /// Steps run since the server started.
    pub runs: u64,
    /// When the last step ended (ms since the Unix epoch).
    pub last_run_ms: Option<i64>,
    /// Items the last step handled.
    pub last_done: u64,
    /// Why the last step failed; cleared by the next success.
    pub last_error: Option<String>,
    /// Steps in a row that failed.
    pub failures: u64,
    /// When the next step is due (ms since the Unix epoch), while waiting.
    pub next_run_ms: Option<i64>,
    /// The instance that ran its last step, or that runs it while this one
    /// stands by.
    #[serde(default)]
    pub holder: Option<String>,
}

impl WorkerStatus {
    /// A worker that has not run yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            state: WorkerState::Idle,
            runs: 0,
            last_run_ms: None,
            last_done: 0,
            last_error: None,
            failures: 0,
            next_run_ms: None,
            holder: None,
        }
    }
}

/// The admin API's list of workers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkersResponse {
    pub workers: Vec<WorkerStatus>,
}

/// A user's storage: what they use and their quota, in bytes. Usage is the
/// logical size of every revision kept (current files, the trash, old
/// revisions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub user: String,
    pub used_bytes: u64,
    /// None: no limit.
    #[serde(default)]
    pub quota_bytes: Option<u64>,
}

/// Sets a user's quota; `null` (or 0 from the command line) lifts it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QuotaRequest {
    pub quota_bytes: Option<u64>,
}

#[cfg(test)]
mod reuse_tests {
    use super::*;

    fn refs(ns: &[u8]) -> Vec<BlockRef> {
        ns.iter()
            .map(|&n| BlockRef {
                id: BlockId::of(&[n]),
                size: 100 + u64::from(n),
            })
            .collect()
    }

    /// Puts the runs back, as the server does, to check they say `new`.
    fn rebuild(base: &[BlockRef], runs: &[Reuse], rest: &[BlockRef]) -> Vec<BlockRef> {
        let mut out = Vec::new();
        let mut rest = rest.iter();
        for r in runs {
            while out.len() < r.at as usize {
                out.push(rest.next().unwrap().clone());
            }
            let stretch = &base[r.start as usize..(r.start + r.count) as usize];
            assert_eq!(Reuse::check_of(stretch.iter().map(|b| &b.id)), r.check);
            out.extend_from_slice(stretch);
        }
        out.extend(rest.cloned());
        out
    }

    #[test]
    fn runs_cover_what_the_base_has_and_list_the_rest() {
        let base = refs(&[1, 2, 3, 4, 5, 6, 7, 8]);
        // An edit of block 3, a block inserted after 6, the last two moved
        // to the front.
        let new = refs(&[7, 8, 1, 2, 30, 4, 5, 6, 60]);
        let (runs, rest) = Reuse::find(&base, &new, 2);
        let ids = |v: &[BlockRef]| v.iter().map(|b| b.id).collect::<Vec<_>>();
        assert_eq!(ids(&rest), ids(&refs(&[30, 60])));
        assert_eq!(runs.len(), 3);
        assert_eq!(ids(&rebuild(&base, &runs, &rest)), ids(&new));
        // One block repeated thousands of times is found as one run, fast.
        let same = refs(&[7; 5000]);
        let (runs, rest) = Reuse::find(&same, &same, 2);
        assert_eq!((runs.len(), rest.len()), (1, 0));
        assert_eq!(runs[0].count, 5000);
        // Runs shorter than the minimum are listed instead.
        let (runs, rest) = Reuse::find(&base, &refs(&[1, 9, 3, 9, 5]), 2);
        assert!(runs.is_empty());
        assert_eq!(rest.len(), 5);
    }
}

/// Body of `POST /api/v1/links`: a link to the file or folder at `path`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateLinkRequest {
    pub path: String,
    /// Seconds until the link stops working (at most ten years); none for
    /// a link that lasts until it is revoked.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    /// A password visitors must give (1 to 1024 bytes).
    #[serde(default)]
    pub password: Option<String>,
    /// A file request: visitors upload files into the folder (names that
    /// are taken get a suffix) and can neither list nor download anything.
    #[serde(default)]
    pub upload_only: bool,
}

/// A link, as its owner sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LinkInfo {
    /// What `DELETE /api/v1/links/{id}` revokes it by.
    pub id: String,
    /// The link's address on this server (`/s/…`); only in the answer that
    /// created it: the server keeps no copy of the secret in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_path: Option<String>,
    /// Where the file or folder is now (it follows renames and moves);
    /// none once it is in the trash, when the link leads nowhere.
    pub path: Option<String>,
    pub kind: Option<EntryKind>,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub has_password: bool,
    #[serde(default)]
    pub upload_only: bool,
}

/// Answer to `PUT /s/{token}/upload`: the name the file was stored under
/// (the one asked for, or with a suffix when that was taken) and its size.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LinkUploadResponse {
    pub name: String,
    pub size: u64,
}

/// Answer to `GET /api/v1/links`: the caller's links, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LinkList {
    pub links: Vec<LinkInfo>,
}

/// What a member of a shared folder may do: an owner and an editor read
/// and write; a viewer only reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ShareRole {
    Owner,
    Editor,
    Viewer,
}

impl ShareRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ShareRole::Owner => "owner",
            ShareRole::Editor => "editor",
            ShareRole::Viewer => "viewer",
        }
    }

    /// The role stored as `raw`; anything unknown reads as the least.
    pub fn from_stored(raw: &str) -> Self {
        match raw {
            "owner" => ShareRole::Owner,
            "editor" => ShareRole::Editor,
            _ => ShareRole::Viewer,
        }
    }
}

/// `POST /api/v1/shares`: share the folder at `path` (at the top of the
/// caller's files) with the user named `with`. Sharing again with a
/// member changes their role.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShareRequest {
    pub path: String,
    pub with: String,
    /// `editor` or `viewer`.
    pub role: ShareRole,
}

/// `PUT /api/v1/shares/{id}/members/{user}`: a member's new role.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoleRequest {
    pub role: ShareRole,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShareMember {
    pub username: String,
    pub role: ShareRole,
}

/// A shared folder as the caller has it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShareInfo {
    /// What the share routes name it by.
    pub id: i64,
    /// Where it is in the caller's files.
    pub path: String,
    /// The caller's role.
    pub role: ShareRole,
    pub owner: String,
    /// Everyone who has it, the owner first.
    pub members: Vec<ShareMember>,
}

/// `GET /api/v1/shares`: the caller's shared folders, by path.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShareList {
    pub shares: Vec<ShareInfo>,
}
