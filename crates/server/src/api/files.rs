//! Files and folders: list, metadata, mkdir, move, delete, upload,
//! download, revisions, restore, and the block-list commit.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use tessera_proto::api::{
    BlockListResponse, BlockRef, CommitBatchRequest, CommitBatchResponse, CommitQuery,
    CommitRequest, CommitResult, DeleteRequest, DownloadQuery, Entry, EntryKind, ListResponse,
    MkdirBatchRequest, MkdirBatchResponse, MoveRequest, PathQuery, PendingListResponse, PinRequest,
    RestoreRequest, Reuse, Revision, RevisionsResponse, UploadQuery,
};
use tessera_proto::api::{MAX_BATCH_SEGMENTS, path_segments};
use tessera_proto::block::{CHUNKER, MAX_BLOCK, MIN_BLOCK};
use tessera_proto::path::fold_name;
use tessera_proto::{ContentHash, RemotePath};
use tokio::io::AsyncReadExt;

use super::place::{self, Place, Places};
use super::{ApiError, AppState, AuthUser, J, Q};
use crate::blocks::{BlockStore, Ingest, IngestError};
use crate::meta::{MetaError, MountRow, NewRevision, NodeRow, RevisionBlock};

pub fn entry(node: &NodeRow, path: &RemotePath) -> Entry {
    let folder = node.is_folder();
    Entry {
        id: node.id.clone(),
        path: path.to_string(),
        name: node.name.clone(),
        kind: if folder {
            EntryKind::Folder
        } else {
            EntryKind::File
        },
        rev: (!folder).then_some(node.rev),
        size: (!folder).then_some(node.size as u64),
        content_hash: node.content_hash(),
        modified_ms: node.modified_ms,
        pending: node.pending_ms.is_some(),
        shared: None,
    }
}

/// A shared folder's mount point as the member sees it: their name for it
/// and their role.
fn mount_entry(root: &NodeRow, at: &Place) -> Result<Entry, ApiError> {
    let mut e = entry(root, &at.shown);
    e.name = at.shown.name().unwrap_or_default().to_owned();
    e.shared = at.role();
    Ok(e)
}

/// The entry for `node` at `at`: its role when it is a mount point.
fn entry_at(node: &NodeRow, at: &Place) -> Result<Entry, ApiError> {
    if at.is_mount() {
        mount_entry(node, at)
    } else {
        Ok(entry(node, &at.shown))
    }
}

fn parse(raw: &str) -> Result<RemotePath, ApiError> {
    Ok(RemotePath::parse(raw)?)
}

fn below_root(raw: &str) -> Result<RemotePath, ApiError> {
    let path = parse(raw)?;
    if path.is_root() {
        return Err(tessera_proto::PathError::Root.into());
    }
    Ok(path)
}

#[utoipa::path(get, path = "/api/v1/files/list", params(PathQuery), responses((status = 200, body = ListResponse), (status = 404, body = tessera_proto::ErrorBody), (status = 409, body = tessera_proto::ErrorBody, description = "the path is a file")), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Q(q): Q<PathQuery>,
) -> Result<Json<ListResponse>, ApiError> {
    let path = parse(&q.path)?;
    let places = Places::of(&state, &user).await?;
    let at = places.read(&path)?;
    let nodes = state.meta.list(at.ns, &at.path).await?;
    // Shared folders mounted right inside this folder of the user's own.
    let mounts: Vec<&MountRow> = if at.mount.is_none() {
        places.mounts_in(&path).collect()
    } else {
        Vec::new()
    };
    let mut entries = Vec::with_capacity(nodes.len() + mounts.len());
    for n in &nodes {
        let at = path.join(&n.name)?;
        // A mount of the same name hides it (the API leads there).
        if !mounts.iter().any(|m| m.point() == at) {
            entries.push(entry(n, &at));
        }
    }
    for m in &mounts {
        let inner = places.read(&m.point())?;
        if let Some(root) = state.meta.resolve(inner.ns, &inner.path).await? {
            entries.push(mount_entry(&root, &inner)?);
        }
    }
    if !mounts.is_empty() {
        // The order of the tree's listing: by folded name, then exact.
        entries.sort_by(|a, b| (fold_name(&a.name), &a.name).cmp(&(fold_name(&b.name), &b.name)));
    }
    Ok(Json(ListResponse {
        path: path.to_string(),
        entries,
    }))
}

#[utoipa::path(get, path = "/api/v1/files/meta", params(PathQuery), responses((status = 200, body = Entry), (status = 404, body = tessera_proto::ErrorBody), (status = 409, body = tessera_proto::ErrorBody, description = "a folder on the way is a file")), security(("bearer" = [])))]
pub async fn meta(
    State(state): State<AppState>,
    user: AuthUser,
    Q(q): Q<PathQuery>,
) -> Result<Json<Entry>, ApiError> {
    let path = parse(&q.path)?;
    let at = place::read(&state, &user, &path).await?;
    let node = state
        .meta
        .resolve(at.ns, &at.path)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{path} does not exist")))?;
    Ok(Json(entry_at(&node, &at)?))
}

#[utoipa::path(post, path = "/api/v1/files/mkdir", request_body = PathQuery, responses((status = 201, body = Entry), (status = 404, body = tessera_proto::ErrorBody, description = "the parent folder does not exist"), (status = 409, body = tessera_proto::ErrorBody, description = "the name is taken, or a folder on the way is a file")), security(("bearer" = [])))]
pub async fn mkdir(
    State(state): State<AppState>,
    user: AuthUser,
    J(q): J<PathQuery>,
) -> Result<(StatusCode, Json<Entry>), ApiError> {
    let path = below_root(&q.path)?;
    let at = place::write(&state, &user, &path).await?;
    if at.is_mount() {
        return Err(ApiError::AlreadyExists(format!("{path} already exists")));
    }
    let node = state.meta.mkdir(at.ns, &at.path, &user.device).await?;
    Ok((StatusCode::CREATED, Json(entry(&node, &path))))
}

/// Refuses a batch whose paths name more than [`MAX_BATCH_SEGMENTS`] names
/// in all, before any of it is looked at.
fn batch_depth<'a>(paths: impl Iterator<Item = &'a str>) -> Result<(), ApiError> {
    let names: usize = paths.map(path_segments).sum();
    if names > MAX_BATCH_SEGMENTS {
        return Err(ApiError::BadRequest(format!(
            "the paths of this batch name {names} folders and files in all; send at most \
             {MAX_BATCH_SEGMENTS} at a time"
        )));
    }
    Ok(())
}

/// Many folders in one request and one transaction; each path succeeds or
/// fails on its own.
#[utoipa::path(post, path = "/api/v1/files/mkdir_batch", request_body = MkdirBatchRequest, responses((status = 200, body = MkdirBatchResponse), (status = 400, body = tessera_proto::ErrorBody, description = "too many paths, or a path that is not valid")), security(("bearer" = [])))]
pub async fn mkdir_batch(
    State(state): State<AppState>,
    user: AuthUser,
    J(req): J<MkdirBatchRequest>,
) -> Result<Json<MkdirBatchResponse>, ApiError> {
    if req.paths.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "send at most {MAX_BATCH} folders at a time"
        )));
    }
    batch_depth(req.paths.iter().map(String::as_str))?;
    let paths = req
        .paths
        .iter()
        .map(|p| below_root(p))
        .collect::<Result<Vec<_>, _>>()?;
    let places = Places::of(&state, &user).await?;
    let mut made: Vec<Option<Result<NodeRow, ApiError>>> = Vec::with_capacity(paths.len());
    // One transaction per namespace the batch reaches, in the order of
    // their first paths.
    let mut groups: Vec<(i64, Vec<(usize, RemotePath)>)> = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        match places.write(path) {
            Ok(at) if at.is_mount() => {
                made.push(Some(Err(ApiError::AlreadyExists(format!(
                    "{path} already exists"
                )))));
            }
            Ok(at) => {
                made.push(None);
                match groups.iter_mut().find(|(ns, _)| *ns == at.ns) {
                    Some((_, list)) => list.push((i, at.path)),
                    None => groups.push((at.ns, vec![(i, at.path)])),
                }
            }
            Err(e) => made.push(Some(Err(e))),
        }
    }
    for (ns, list) in groups {
        let inner: Vec<RemotePath> = list.iter().map(|(_, p)| p.clone()).collect();
        let outcomes = state.meta.mkdir_many(ns, &inner, &user.device).await?;
        for ((i, _), outcome) in list.into_iter().zip(outcomes) {
            made[i] = Some(outcome.map_err(ApiError::from));
        }
    }
    let results = paths
        .iter()
        .zip(made)
        .map(|(path, made)| match made {
            Some(Ok(node)) => CommitResult {
                entry: Some(entry(&node, path)),
                error: None,
            },
            Some(Err(e)) => CommitResult {
                entry: None,
                error: Some(e.detail()),
            },
            None => CommitResult {
                entry: None,
                error: Some(ApiError::internal("lost a result").detail()),
            },
        })
        .collect();
    Ok(Json(MkdirBatchResponse { results }))
}

#[utoipa::path(post, path = "/api/v1/files/move", request_body = MoveRequest, responses((status = 200, body = Entry), (status = 404, body = tessera_proto::ErrorBody), (status = 409, body = tessera_proto::ErrorBody, description = "the target is taken, or is inside the folder moved")), security(("bearer" = [])))]
pub async fn move_node(
    State(state): State<AppState>,
    user: AuthUser,
    J(req): J<MoveRequest>,
) -> Result<Json<Entry>, ApiError> {
    let from = below_root(&req.from)?;
    let to = below_root(&req.to)?;
    let places = Places::of(&state, &user).await?;
    let source = places.read(&from)?;
    if source.is_mount() {
        return rename_mount(&state, &user, &places, &source, &to).await;
    }
    let source = places.write(&from)?;
    let target = places.write(&to)?;
    if target.is_mount() {
        return Err(ApiError::AlreadyExists(format!("{to} already exists")));
    }
    if source.ns != target.ns {
        if let Some(m) = places
            .mounts()
            .iter()
            .find(|m| source.mount.is_none() && m.point().starts_with(&source.path))
        {
            return Err(ApiError::BadRequest(format!(
                "{from} holds the shared folder /{}, and a shared folder cannot hold another: \
                 move /{} out of it first",
                m.name, m.name
            )));
        }
        return move_across(&state, &user, &source, &target).await;
    }
    let node = state
        .meta
        .move_node(source.ns, &source.path, &target.path, &user.device)
        .await?;
    Ok(Json(entry(&node, &to)))
}

/// The most files and folders one move across a shared folder's edge
/// takes (it copies their block lists, so it is bounded like a batch).
const MOST_MOVED_ACROSS: usize = 10_000;

/// A move between namespaces (into, out of or between shared folders): the
/// files' current revisions are committed at the target with the same
/// blocks (no bytes are copied; the target's owner is charged), then the
/// source goes to its trash. Two transactions: a failure between them
/// leaves both copies, never none.
async fn move_across(
    state: &AppState,
    user: &AuthUser,
    source: &Place,
    target: &Place,
) -> Result<Json<Entry>, ApiError> {
    let node = state
        .meta
        .resolve(source.ns, &source.path)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{} does not exist", source.shown)))?;
    if state.meta.resolve(target.ns, &target.path).await?.is_some() {
        return Err(ApiError::AlreadyExists(format!(
            "{} already exists",
            target.shown
        )));
    }
    // What to make at the target, parents first.
    let mut folders: Vec<RemotePath> = Vec::new();
    let mut files: Vec<(RemotePath, RemotePath)> = Vec::new();
    if node.is_folder() {
        let mut queue =
            std::collections::VecDeque::from([(source.path.clone(), target.path.clone())]);
        folders.push(target.path.clone());
        while let Some((from, to)) = queue.pop_front() {
            for child in state.meta.list(source.ns, &from).await? {
                let pair = (from.join(&child.name)?, to.join(&child.name)?);
                if child.is_folder() {
                    folders.push(pair.1.clone());
                    queue.push_back(pair);
                } else if child.rev > 0 {
                    files.push(pair);
                }
                if folders.len() + files.len() > MOST_MOVED_ACROSS {
                    return Err(ApiError::BadRequest(format!(
                        "{} holds more than {MOST_MOVED_ACROSS} files and folders: move it across \
                         a shared folder's edge in parts",
                        source.shown
                    )));
                }
            }
        }
    } else {
        files.push((source.path.clone(), target.path.clone()));
    }
    for made in state
        .meta
        .mkdir_many(target.ns, &folders, &user.device)
        .await?
    {
        match made {
            Ok(_) | Err(MetaError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut news = Vec::with_capacity(files.len());
    for (from, to) in files {
        let (_, rev, blocks) = state.meta.file_revision(source.ns, &from, None).await?;
        news.push(NewRevision {
            ns: target.ns,
            user_id: user.user_id,
            path: to,
            base_rev: Some(0),
            size: rev.size as u64,
            content_hash: rev.content_hash(),
            chunker: rev.chunker.clone(),
            blocks: blocks.iter().map(|b| (b.id, b.size)).collect(),
            device: user.device.clone(),
        });
    }
    for chunk in news.chunks(MAX_BATCH) {
        for outcome in state.meta.commit_many(chunk).await? {
            outcome?;
        }
    }
    // A file changed meanwhile stays where it was (both versions are
    // kept, the older one at the target).
    let base = (!node.is_folder()).then_some(node.rev);
    state
        .meta
        .delete(source.ns, &source.path, base, &user.device)
        .await?;
    let moved = state
        .meta
        .resolve(target.ns, &target.path)
        .await?
        .ok_or_else(|| ApiError::internal("a moved node vanished"))?;
    Ok(Json(entry(&moved, &target.shown)))
}

/// A move of a shared folder's mount point: the member renames it or
/// moves it among their own folders, for themselves only.
async fn rename_mount(
    state: &AppState,
    user: &AuthUser,
    places: &Places,
    source: &Place,
    to: &RemotePath,
) -> Result<Json<Entry>, ApiError> {
    let Some(mount) = &source.mount else {
        return Err(ApiError::internal("a mount point without a mount"));
    };
    let target = places.read(to)?;
    // Onto itself is nothing to do (the meta layer says so).
    if let Some(m) = &target.mount
        && !(target.is_mount() && m.namespace_id == mount.namespace_id)
    {
        return Err(if target.is_mount() {
            ApiError::AlreadyExists(format!("{to} already exists"))
        } else if m.namespace_id == mount.namespace_id {
            ApiError::InsideItself(format!(
                "cannot move {} to {to}: that is inside it; choose a folder outside it",
                source.shown
            ))
        } else {
            ApiError::BadRequest(format!(
                "{to} is inside the shared folder /{}: a shared folder cannot hold another; \
                 choose a folder of your own",
                m.name
            ))
        });
    }
    state
        .meta
        .rename_mount(user.user_id, mount.namespace_id, to, &user.device)
        .await?;
    let moved = place::read(state, user, to).await?;
    let root = state
        .meta
        .resolve(moved.ns, &moved.path)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{to} does not exist")))?;
    Ok(Json(mount_entry(&root, &moved)?))
}

#[utoipa::path(post, path = "/api/v1/files/delete", request_body = DeleteRequest, responses((status = 204, description = "moved to the trash"), (status = 409, body = tessera_proto::ErrorBody, description = "stale base_rev"), (status = 404, body = tessera_proto::ErrorBody)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    J(q): J<DeleteRequest>,
) -> Result<StatusCode, ApiError> {
    let path = below_root(&q.path)?;
    let places = Places::of(&state, &user).await?;
    let at = places.read(&path)?;
    if let (true, Some(m)) = (at.is_mount(), &at.mount) {
        if m.owned() {
            // The owner's delete: everyone loses it, and it goes to the
            // owner's trash whole.
            state
                .meta
                .delete_shared(&user.row(), m.namespace_id, &user.device)
                .await?;
        } else {
            // A member deleting a shared folder leaves it; its files stay
            // with everyone else.
            state
                .meta
                .unmount(user.user_id, m.namespace_id, user.user_id, &user.device)
                .await?;
        }
        return Ok(StatusCode::NO_CONTENT);
    }
    let at = places.write(&path)?;
    state
        .meta
        .delete(at.ns, &at.path, q.base_rev, &user.device)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn too_large(limit: u64) -> ApiError {
    ApiError::TooLarge(format!(
        "file is larger than this server's limit of {limit} bytes"
    ))
}

/// Blocks of one simple upload stored at once.
const UPLOAD_PARALLEL: usize = 3;

/// How long an upload body may stall before the server gives up on it, so a
/// client that stops sending does not hold a request open forever.
const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) fn idle_timeout<S>(
    stream: S,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>>
where
    S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
{
    futures::stream::unfold(stream, |mut s| async move {
        match tokio::time::timeout(BODY_IDLE, s.next()).await {
            Ok(item) => item.map(|i| (i, s)),
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no data for 60 s",
                )),
                s,
            )),
        }
    })
}

/// Reads and drops what is left of a refused body (up to a bound), so a
/// client that sends without `Expect: 100-continue` gets to read the error
/// instead of a reset connection.
pub(crate) async fn drain<R: tokio::io::AsyncRead + Unpin>(body: &mut R) {
    const DRAIN_LIMIT: u64 = 64 << 20;
    let mut rest = body.take(DRAIN_LIMIT);
    let mut sink = tokio::io::sink();
    let discard = tokio::io::copy(&mut rest, &mut sink);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), discard).await;
}

/// Simple upload: the body is the file. The server cuts, stores and commits.
/// Nothing is visible until the whole body has arrived and been stored.
#[utoipa::path(put, path = "/api/v1/files/content", params(UploadQuery), request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses((status = 201, body = Entry), (status = 404, body = tessera_proto::ErrorBody, description = "the folder does not exist"), (status = 409, body = tessera_proto::ErrorBody, description = "stale base_rev, or the path is a folder"), (status = 413, body = tessera_proto::ErrorBody), (status = 429), (status = 507, body = tessera_proto::ErrorBody, description = "over the account's quota (code quota_exceeded)")), security(("bearer" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    Q(q): Q<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Entry>), ApiError> {
    let path = below_root(&q.path)?;
    let at = place::write(&state, &user, &path).await?;
    let inner = at.file()?.clone();
    let body = ingest_body(&state, user.user_id, &headers, body).await?;
    let new = NewRevision {
        ns: at.ns,
        user_id: user.user_id,
        path: inner,
        base_rev: q.base_rev,
        size: body.size,
        content_hash: body.content_hash,
        chunker: CHUNKER.to_owned(),
        blocks: body.blocks,
        device: user.device.clone(),
    };
    let node = state.meta.commit(&new).await?;
    Ok((StatusCode::CREATED, Json(entry(&node, &path))))
}

/// A request body stored as blocks, ready to commit.
pub(super) struct Ingested {
    pub blocks: Vec<(tessera_proto::BlockId, u64)>,
    pub size: u64,
    pub content_hash: ContentHash,
}

/// Cuts and stores a request body as `user_id`'s blocks, within the size
/// limit and the user's quota (checked first when the length is declared).
pub(super) async fn ingest_body(
    state: &AppState,
    user_id: i64,
    headers: &HeaderMap,
    body: Body,
) -> Result<Ingested, ApiError> {
    let limit = state.limits.max_file_size;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let stream = Box::pin(idle_timeout(
        body.into_data_stream().map_err(std::io::Error::other),
    ));
    let mut body = tokio_util::io::StreamReader::new(stream);
    if declared.is_some_and(|n| n > limit) {
        drain(&mut body).await;
        return Err(too_large(limit));
    }
    // Over the quota: refused before anything is stored. (Without a
    // length, the commit refuses it, and the blocks go to collection.)
    if let Some(n) = declared
        && let Err(e) = state.meta.check_room(user_id, n).await
    {
        drain(&mut body).await;
        return Err(e.into());
    }
    // Read at most one byte past the limit, so an oversized body without a
    // length is refused without storing the excess.
    let mut ingest = Ingest::new(state.blocks.clone(), user_id)
        .limit(limit)
        .parallel(UPLOAD_PARALLEL);
    let blocks = match ingest.cut((&mut body).take(limit + 1), None).await {
        Ok(cut) => cut.blocks,
        Err(IngestError::TooLarge(_)) => {
            drain(&mut body).await;
            return Err(too_large(limit));
        }
        Err(IngestError::Cut(e)) => {
            return Err(ApiError::BadRequest(format!(
                "upload interrupted before the end of the body: {e}"
            )));
        }
        Err(e) => return Err(ingest_error(e)),
    };
    let total = ingest.len();
    if declared.is_some_and(|n| n != total) {
        return Err(ApiError::BadRequest(format!(
            "body ended after {total} bytes, but Content-Length said {}",
            declared.unwrap_or(0)
        )));
    }
    Ok(Ingested {
        blocks,
        size: total,
        content_hash: ingest.content_hash(),
    })
}

fn ingest_error(e: IngestError) -> ApiError {
    match e {
        IngestError::Block(e) => e.into(),
        IngestError::Meta(e) => e.into(),
        other => ApiError::Internal(other.to_string()),
    }
}

/// Checks a commit request and turns it into a new revision.
fn new_revision(
    state: &AppState,
    user: &AuthUser,
    places: &Places,
    req: CommitRequest,
) -> Result<NewRevision, ApiError> {
    let shown = below_root(&req.path)?;
    let at = places.write(&shown)?;
    let path = at.file()?.clone();
    if !req.reuse.is_empty() {
        return Err(ApiError::BadRequest(
            "`reuse` is taken by /files/commit only: list every block here".into(),
        ));
    }
    if req.chunker != CHUNKER {
        return Err(ApiError::BadRequest(format!(
            "blocks were cut with `{}`; this server cuts with `{CHUNKER}`: update the client",
            req.chunker
        )));
    }
    if req.size > state.limits.max_file_size {
        return Err(too_large(state.limits.max_file_size));
    }
    if let Some(b) = req
        .blocks
        .iter()
        .find(|b| b.size == 0 || b.size > MAX_BLOCK as u64)
    {
        return Err(ApiError::BadRequest(format!(
            "block {} has size {}; blocks are 1 to {MAX_BLOCK} bytes",
            b.id, b.size
        )));
    }
    // The chunker cuts no block but the last below MIN_BLOCK, so the size
    // bounds the list's length: a longer list is no file this server made.
    let most = req.size / MIN_BLOCK as u64 + 1;
    if req.blocks.len() as u64 > most {
        return Err(ApiError::BadRequest(format!(
            "{} blocks cannot make a file of {} bytes: blocks other than the last are at least \
             {MIN_BLOCK} bytes, so it has at most {most}; cut the file with `{CHUNKER}`",
            req.blocks.len(),
            req.size
        )));
    }
    let total = req.blocks.iter().map(|b| b.size).sum::<u64>();
    if total != req.size {
        return Err(ApiError::BadRequest(format!(
            "the blocks add up to {total} bytes, but the commit says the file is {} bytes",
            req.size
        )));
    }
    Ok(NewRevision {
        ns: at.ns,
        user_id: user.user_id,
        path,
        base_rev: req.base_rev,
        size: req.size,
        content_hash: req.content_hash,
        chunker: req.chunker,
        blocks: req.blocks.iter().map(|b| (b.id, b.size)).collect(),
        device: user.device.clone(),
    })
}

/// Why a commit cannot go ahead before any write: blocks to upload first,
/// or a refusal.
enum Unready {
    Missing(Vec<tessera_proto::BlockId>),
    Refused(ApiError),
}

impl From<ApiError> for Unready {
    fn from(e: ApiError) -> Self {
        Unready::Refused(e)
    }
}

impl From<crate::meta::MetaError> for Unready {
    fn from(e: crate::meta::MetaError) -> Self {
        Unready::Refused(e.into())
    }
}

/// Checks a commit against the blocks the user holds and makes sure its
/// `content_hash` is the file's, all before and outside the write
/// transaction. The hash is what the server reports as the file's identity,
/// so a claim is taken only when a revision of the same namespace with the
/// very same block list already carries a server-checked hash, and is
/// otherwise checked by streaming the blocks through BLAKE3.
async fn check_commit(
    state: &AppState,
    new: &NewRevision,
    upload: Option<&str>,
) -> Result<(), Unready> {
    let ids: Vec<_> = new.blocks.iter().map(|(id, _)| *id).collect();
    let known = state.meta.user_blocks(new.user_id, &ids).await?;
    check_commit_with(state, new, &known, upload).await
}

/// [`check_commit`] with the user's blocks already looked up (`known` may
/// hold more than this commit's: a batch looks them up at once). `upload`
/// names the numbered upload whose blocks were hashed as they came.
async fn check_commit_with(
    state: &AppState,
    new: &NewRevision,
    known: &crate::meta::UserBlocks,
    upload: Option<&str>,
) -> Result<(), Unready> {
    let mut missing = Vec::new();
    let mut listed = std::collections::HashSet::new();
    for (id, size) in &new.blocks {
        match known.get(id) {
            None if listed.insert(*id) => missing.push(*id),
            None => {}
            Some((len, _)) if len != size => {
                return Err(ApiError::BadRequest(format!(
                    "block {id} is {len} bytes, not {size} as the commit says"
                ))
                .into());
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        return Err(Unready::Missing(missing));
    }
    let key = crate::meta::blocks_key(&new.chunker, &new.blocks);
    // Taken (and so ended) whatever the outcome, a retry reading back;
    // off the reactor, as a chain may be hashing a block that arrived.
    let (numbered, listed) = if upload.is_none() && new.blocks.len() < 2 {
        (None, None) // nothing is followed for a file of one block
    } else {
        let running = state.running_hashes.clone();
        let (user, name) = (new.user_id, upload.map(str::to_owned));
        tokio::task::spawn_blocking(move || {
            let numbered = name.and_then(|n| running.take_seq(user, &n));
            (numbered, running.take(user, &key))
        })
        .await
        .unwrap_or((None, None))
    };
    let numbered = numbered.and_then(|p| {
        let hashed = new.blocks.get(..p.hashed)?;
        (crate::uploads::running_hash::ids_digest(hashed) == p.ids_digest).then_some(
            crate::uploads::running_hash::Progress {
                hashed: p.hashed,
                hasher: p.hasher,
            },
        )
    });
    let single = match new.blocks.as_slice() {
        // A file of one block hashes to that block's id (both are BLAKE3
        // of the same bytes), which was verified when the block was
        // stored: no query and no read. Most small files are one block.
        [(id, _)] => Some(id.0.to_vec()),
        // An empty file's hash is that of no bytes; its revisions keep no
        // block list key to look up.
        [] => Some(tessera_proto::ContentHash::of(&[]).0.to_vec()),
        _ => None,
    };
    let verified = match single {
        Some(h) => Some(h),
        None => state.meta.verified_hash(new.ns, &key).await?,
    };
    let actual = match verified {
        Some(h) => h,
        // What arrived in order since the early commit is hashed
        // already: only the rest is read back, if any.
        None => match numbered.or(listed) {
            Some(done) if done.hashed == new.blocks.len() => {
                done.hasher.finalize().as_bytes().to_vec()
            }
            so_far => {
                // A check reads the whole file (up to the size limit, and a
                // block listed again and again is read again): bounded, so
                // commits that claim large files cannot take every core.
                let _turn = tokio::time::timeout(HASH_CHECK_WAIT, state.hash_checks.acquire())
                    .await
                    .map_err(|_| {
                        ApiError::Throttled(
                            "the server is busy checking other files' content: retry in a moment"
                                .into(),
                            5,
                        )
                    })?
                    .map_err(ApiError::internal)?;
                content_hash_of(state, &new.blocks, known, so_far)
                    .await?
                    .0
                    .to_vec()
            }
        },
    };
    if actual != new.content_hash.0 {
        let actual = tessera_proto::ContentHash(actual.try_into().unwrap_or([0; 32]));
        return Err(ApiError::BadRequest(format!(
            "content_hash {} does not match the blocks, which hash to {actual}: \
             send the BLAKE3 hash of the whole file",
            new.content_hash
        ))
        .into());
    }
    Ok(())
}

/// How long a commit waits for a free content-hash check before 429.
const HASH_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// BLAKE3 of the file the blocks make, read in order (a block repeated in
/// a row is read once), one block and one read ahead in memory; from where
/// `so_far` got, if the upload was hashed as it arrived.
async fn content_hash_of(
    state: &AppState,
    blocks: &[(tessera_proto::BlockId, u64)],
    known: &std::collections::HashMap<tessera_proto::BlockId, (u64, crate::meta::BlockLoc)>,
    so_far: Option<crate::uploads::running_hash::Progress>,
) -> Result<ContentHash, ApiError> {
    let (from, mut hasher) = match so_far {
        Some(p) if p.hashed <= blocks.len() => (p.hashed, p.hasher),
        _ => (0, blake3::Hasher::new()),
    };
    if from < blocks.len() {
        tracing::debug!(
            hashed = from,
            blocks = blocks.len(),
            "reading blocks back for the content check"
        );
    }
    let mut runs: Vec<(tessera_proto::BlockId, crate::meta::BlockLoc, usize)> = Vec::new();
    for (id, _) in &blocks[from..] {
        match runs.last_mut() {
            Some((last, _, n)) if last == id => *n += 1,
            _ => {
                let (_, loc) = known
                    .get(id)
                    .ok_or_else(|| ApiError::internal(format!("block {id} vanished")))?;
                runs.push((*id, loc.clone(), 1));
            }
        }
    }
    let store = state.blocks.clone();
    let mut reads = futures::stream::iter(runs)
        .map(|(id, loc, n)| {
            let store = store.clone();
            async move { Ok::<_, ApiError>((store.read_plain(id, &loc).await?, n)) }
        })
        .buffered(2);
    while let Some(read) = reads.next().await {
        let (plain, n) = read?;
        tokio::task::block_in_place(|| {
            for _ in 0..n {
                hasher.update(&plain);
            }
        });
    }
    Ok(ContentHash::from(hasher.finalize()))
}

/// Block-protocol commit: the file as an ordered list of uploaded blocks.
#[utoipa::path(post, path = "/api/v1/files/commit", params(CommitQuery), request_body = CommitRequest, responses((status = 201, body = Entry), (status = 400, body = tessera_proto::ErrorBody, description = "bad input (the message says what to fix), or missing_blocks lists the blocks to upload"), (status = 404, body = tessera_proto::ErrorBody, description = "the folder does not exist"), (status = 409, body = tessera_proto::ErrorBody, description = "stale base_rev, or the path is a folder"), (status = 429, body = tessera_proto::ErrorBody, description = "the server is busy checking other files' content: retry after Retry-After seconds")), security(("bearer" = [])))]
pub async fn commit(
    State(state): State<AppState>,
    user: AuthUser,
    Q(q): Q<CommitQuery>,
    J(req): J<CommitRequest>,
) -> Result<(StatusCode, Json<Entry>), ApiError> {
    let places = Places::of(&state, &user).await?;
    let req = with_reused(&state, &places, req).await?;
    let shown = below_root(&req.path)?;
    let new = new_revision(&state, &user, &places, req)?;
    // Over the quota: refused before the client sends any block.
    let same = state
        .meta
        .resolve(new.ns, &new.path)
        .await?
        .is_some_and(|n| n.size == new.size as i64 && n.content_hash() == Some(new.content_hash));
    if !same {
        state.meta.check_room(new.user_id, new.size).await?;
    }
    match check_commit(&state, &new, q.upload.as_deref()).await {
        Ok(()) => {}
        Err(Unready::Refused(e)) => return Err(e),
        Err(Unready::Missing(missing)) => {
            // The upload is under way: show the file as syncing, and hash
            // its blocks as they come (a numbered upload hashes them
            // already).
            state.meta.mark_upload_pending(&new).await?;
            if q.upload.is_none() {
                state.running_hashes.begin(
                    new.user_id,
                    crate::meta::blocks_key(&new.chunker, &new.blocks),
                    &new.blocks,
                    &missing,
                );
            }
            return Err(ApiError::MissingBlocks(missing));
        }
    }
    let node = state.meta.commit(&new).await?;
    Ok((StatusCode::CREATED, Json(entry(&node, &shown))))
}

/// The commit with the stretches it reuses from the base revision put
/// back into its block list. Anything that does not fit (no base, a
/// stretch outside it, a check that differs, runs out of order) is a 400
/// that says to send the whole list.
async fn with_reused(
    state: &AppState,
    places: &Places,
    mut req: CommitRequest,
) -> Result<CommitRequest, ApiError> {
    if req.reuse.is_empty() {
        return Ok(req);
    }
    let refuse = |why: String| {
        ApiError::BadRequest(format!(
            "cannot reuse blocks of the base revision: {why}; send the whole block list"
        ))
    };
    let Some(base_rev) = req.base_rev else {
        return Err(refuse("the commit names no base_rev".into()));
    };
    // The size limit first: the bound below is taken from the claimed size.
    if req.size > state.limits.max_file_size {
        return Err(too_large(state.limits.max_file_size));
    }
    // The same bound as the list itself, before anything is allocated.
    let most = req.size / MIN_BLOCK as u64 + 1;
    let reused: u64 = req.reuse.iter().map(|r| u64::from(r.count)).sum();
    if reused + req.blocks.len() as u64 > most {
        return Err(refuse(format!(
            "{} blocks cannot make a file of {} bytes",
            reused + req.blocks.len() as u64,
            req.size
        )));
    }
    let path = below_root(&req.path)?;
    let at = places.write(&path)?;
    let (_, _, base) = match state
        .meta
        .file_revision(at.ns, at.file()?, Some(base_rev))
        .await
    {
        Ok(found) => found,
        Err(MetaError::NotFound(_)) => {
            return Err(refuse(format!(
                "revision {base_rev} of {path} does not exist"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let mut explicit = std::mem::take(&mut req.blocks).into_iter();
    // Sized by what is really there, never by the claim: each run is checked
    // against the base before it adds anything.
    let mut blocks = Vec::with_capacity(base.len().min(reused as usize) + explicit.len());
    for run in std::mem::take(&mut req.reuse) {
        let at = run.at as usize;
        if at < blocks.len() {
            return Err(refuse(format!(
                "the stretch at {at} overlaps the one before"
            )));
        }
        while blocks.len() < at {
            let Some(b) = explicit.next() else {
                return Err(refuse(format!(
                    "a stretch is placed at {at}, past the listed blocks"
                )));
            };
            blocks.push(b);
        }
        let (start, count) = (run.start as usize, run.count as usize);
        let Some(stretch) = base.get(start..start.saturating_add(count)) else {
            return Err(refuse(format!(
                "blocks {start}..{} are past the end of revision {base_rev}",
                start.saturating_add(count)
            )));
        };
        if count == 0 || Reuse::check_of(stretch.iter().map(|b| &b.id)) != run.check {
            return Err(refuse(format!(
                "blocks {start}..{} of revision {base_rev} are not the ones meant",
                start + count
            )));
        }
        blocks.extend(stretch.iter().map(|b| BlockRef {
            id: b.id,
            size: b.size,
        }));
    }
    blocks.extend(explicit);
    req.blocks = blocks;
    Ok(req)
}

/// Most commits in one batch.
const MAX_BATCH: usize = 1000;
/// Most blocks in one batch, all items together: the batch is one write
/// transaction, and it is meant for small files (one block each).
const MAX_BATCH_BLOCKS: usize = 4 * MAX_BATCH;

/// Many commits in one request and one transaction; each item succeeds or
/// fails on its own.
#[utoipa::path(post, path = "/api/v1/files/commit_batch", request_body = CommitBatchRequest, responses((status = 200, body = CommitBatchResponse)), security(("bearer" = [])))]
pub async fn commit_batch(
    State(state): State<AppState>,
    user: AuthUser,
    J(req): J<CommitBatchRequest>,
) -> Result<Json<CommitBatchResponse>, ApiError> {
    if req.commits.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "send at most {MAX_BATCH} commits at a time"
        )));
    }
    batch_depth(req.commits.iter().map(|c| c.path.as_str()))?;
    let blocks: usize = req.commits.iter().map(|c| c.blocks.len()).sum();
    if blocks > MAX_BATCH_BLOCKS {
        return Err(ApiError::BadRequest(format!(
            "a batch names {blocks} blocks; send at most {MAX_BATCH_BLOCKS} at a time, \
             and commit large files on their own"
        )));
    }
    let places = Places::of(&state, &user).await?;
    let mut shown = Vec::with_capacity(req.commits.len());
    let items: Vec<_> = req
        .commits
        .into_iter()
        .map(|c| {
            shown.push(c.path.clone());
            new_revision(&state, &user, &places, c)
        })
        .collect();
    // One lookup of the user's blocks for the whole batch.
    let ids: Vec<_> = items
        .iter()
        .flatten()
        .flat_map(|n| n.blocks.iter().map(|(id, _)| *id))
        .collect();
    let known = state.meta.user_blocks(user.user_id, &ids).await?;
    let mut results: Vec<Option<CommitResult>> = Vec::with_capacity(items.len());
    let mut valid = Vec::new();
    let mut valid_shown = Vec::new();
    for (item, shown) in items.into_iter().zip(shown) {
        let checked = match item {
            Ok(n) => match check_commit_with(&state, &n, &known, None).await {
                Ok(()) => Ok(n),
                Err(Unready::Missing(ids)) => Err(ApiError::MissingBlocks(ids)),
                Err(Unready::Refused(e)) => Err(e),
            },
            Err(e) => Err(e),
        };
        match checked {
            Ok(n) => {
                results.push(None);
                valid.push(n);
                valid_shown.push(shown);
            }
            Err(e) => results.push(Some(CommitResult {
                entry: None,
                error: Some(e.detail()),
            })),
        }
    }
    let outcomes = commit_by_namespace(&state, &valid).await?;
    let mut outcomes = valid_shown.iter().zip(outcomes);
    let results = results
        .into_iter()
        .map(|r| match r {
            Some(failed) => failed,
            None => match outcomes.next() {
                Some((shown, Ok(node))) => CommitResult {
                    entry: RemotePath::parse(shown).ok().map(|p| entry(&node, &p)),
                    error: None,
                },
                Some((_, Err(e))) => CommitResult {
                    entry: None,
                    error: Some(ApiError::from(e).detail()),
                },
                None => CommitResult {
                    entry: None,
                    error: Some(ApiError::internal("lost a result").detail()),
                },
            },
        })
        .collect();
    Ok(Json(CommitBatchResponse { results }))
}

/// Commits a batch, one transaction per namespace it reaches (a user's
/// own files and the shared folders they write to); outcomes in order.
async fn commit_by_namespace(
    state: &AppState,
    news: &[NewRevision],
) -> Result<Vec<crate::meta::Result<NodeRow>>, ApiError> {
    let mut namespaces: Vec<i64> = Vec::new();
    for n in news {
        if !namespaces.contains(&n.ns) {
            namespaces.push(n.ns);
        }
    }
    if namespaces.len() <= 1 {
        return Ok(state.meta.commit_many(news).await?);
    }
    let mut out: Vec<Option<crate::meta::Result<NodeRow>>> = news.iter().map(|_| None).collect();
    for ns in namespaces {
        let (idx, group): (Vec<usize>, Vec<NewRevision>) = news
            .iter()
            .enumerate()
            .filter(|(_, n)| n.ns == ns)
            .map(|(i, n)| (i, n.clone()))
            .unzip();
        for (i, outcome) in idx.into_iter().zip(state.meta.commit_many(&group).await?) {
            out[i] = Some(outcome);
        }
    }
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(MetaError::Invalid("lost a result".into()))))
        .collect())
}

/// Parses a single `bytes=` range against `size`: `Ok(None)` means "send
/// it all" (no header, or a form we do not serve, which RFC 9110 allows).
fn parse_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(raw) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = raw.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (Some(start), None) if b.is_empty() => (start, size.saturating_sub(1)),
        (Some(start), Some(end)) => (start, end.min(size.saturating_sub(1))),
        (None, Some(suffix)) if a.is_empty() => {
            if suffix == 0 {
                return Err(ApiError::RangeNotSatisfiable(size));
            }
            (size.saturating_sub(suffix), size.saturating_sub(1))
        }
        _ => return Ok(None),
    };
    if range.0 >= size || range.0 > range.1 {
        return Err(ApiError::RangeNotSatisfiable(size));
    }
    Ok(Some(range))
}

#[utoipa::path(get, path = "/api/v1/files/content", params(DownloadQuery), responses((status = 200, content_type = "application/octet-stream", description = "the file; ETag is the content hash"), (status = 206, description = "a byte range"), (status = 304, description = "If-None-Match matched"), (status = 404, body = tessera_proto::ErrorBody), (status = 409, body = tessera_proto::ErrorBody, description = "the path is a folder"), (status = 416, body = tessera_proto::ErrorBody)), security(("bearer" = [])))]
pub async fn download(
    State(state): State<AppState>,
    user: AuthUser,
    Q(q): Q<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = below_root(&q.path)?;
    let at = place::read(&state, &user, &path).await?;
    file_response(&state, at.ns, at.file()?, q.rev, &headers).await
}

/// A revision of the file at `path` of `ns` (the current one when `rev` is
/// `None`) as a download: `ETag`, `If-None-Match`, `Range`, streamed.
pub(super) async fn file_response(
    state: &AppState,
    ns: i64,
    path: &RemotePath,
    rev: Option<i64>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let (node, rev, blocks) = state.meta.file_revision(ns, path, rev).await?;
    let size = rev.size as u64;
    let hash = rev.content_hash();
    let etag = format!("\"{hash}\"");
    let mut out = HeaderMap::new();
    let hv = |s: &str| HeaderValue::from_str(s).map_err(ApiError::internal);
    out.insert(header::ETAG, hv(&etag)?);
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(tessera_proto::headers::REV, HeaderValue::from(rev.rev));
    out.insert(tessera_proto::headers::CONTENT_HASH, hv(&hash.to_hex())?);
    out.insert(tessera_proto::headers::ID, hv(&node.id)?);
    let matches_etag = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches_etag {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    let range = requested_range(headers, &etag, size)?;
    let (start, end, status) = match range {
        Some((s, e)) => {
            out.insert(header::CONTENT_RANGE, hv(&format!("bytes {s}-{e}/{size}"))?);
            (s, e + 1, StatusCode::PARTIAL_CONTENT)
        }
        None => (0, size, StatusCode::OK),
    };
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let body = stream_range(state.blocks.clone(), blocks, start, end).await?;
    Ok((status, out, body).into_response())
}

/// The range to send: the `Range` asked for, unless `If-Range` names other
/// content. A resumed download names what it already holds in If-Range;
/// if that is no longer this content, its bytes must not be spliced with
/// these, so the range is ignored and the whole file goes out (RFC 9110
/// 13.1.5: strong comparison, and a date never matches since no
/// Last-Modified is sent).
fn requested_range(
    headers: &HeaderMap,
    etag: &str,
    size: u64,
) -> Result<Option<(u64, u64)>, ApiError> {
    let if_range_holds = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|v| v.trim() == etag));
    if if_range_holds {
        parse_range(headers, size)
    } else {
        Ok(None)
    }
}

/// Bytes `start..end` of a file made of `blocks`, read two blocks ahead.
/// The first block is read before answering, so a damaged file fails with
/// an error status rather than a truncated 200.
async fn stream_range(
    store: BlockStore,
    blocks: Vec<RevisionBlock>,
    start: u64,
    end: u64,
) -> Result<Body, ApiError> {
    let wanted: Vec<RevisionBlock> = blocks
        .into_iter()
        .filter(|b| b.file_offset < end && b.file_offset + b.size > start)
        .collect();
    let fetch = move |b: RevisionBlock| {
        let store = store.clone();
        async move {
            let plain = store.read_plain(b.id, &b.loc).await.map_err(|e| {
                tracing::error!(block = %b.id, error = %e, "block read failed during download");
                std::io::Error::other(e.to_string())
            })?;
            let lo = start.saturating_sub(b.file_offset) as usize;
            let hi = (end - b.file_offset).min(b.size) as usize;
            Ok::<_, std::io::Error>(plain.slice(lo..hi))
        }
    };
    let mut rest = wanted.into_iter();
    let first = match rest.next() {
        Some(b) => Some(
            fetch(b)
                .await
                .map_err(|e| ApiError::Internal(format!("stored data is damaged: {e}")))?,
        ),
        None => None,
    };
    let stream = futures::stream::iter(first.map(Ok))
        .chain(futures::stream::iter(rest).map(fetch).buffered(2));
    Ok(Body::from_stream(stream))
}

#[utoipa::path(get, path = "/api/v1/files/revisions", params(PathQuery), responses((status = 200, body = RevisionsResponse), (status = 404, body = tessera_proto::ErrorBody), (status = 409, body = tessera_proto::ErrorBody, description = "the path is a folder")), security(("bearer" = [])))]
pub async fn revisions(
    State(state): State<AppState>,
    user: AuthUser,
    Q(q): Q<PathQuery>,
) -> Result<Json<RevisionsResponse>, ApiError> {
    let path = below_root(&q.path)?;
    let at = place::read(&state, &user, &path).await?;
    let (_, revs) = state.meta.revisions(at.ns, at.file()?).await?;
    let revisions = revs.iter().map(revision).collect();
    Ok(Json(RevisionsResponse {
        path: path.to_string(),
        revisions,
    }))
}

fn revision(r: &crate::meta::RevisionRow) -> Revision {
    Revision {
        rev: r.rev,
        size: r.size as u64,
        content_hash: r.content_hash(),
        created_ms: r.created_ms,
        device: r.device.clone(),
        pinned: r.pinned,
    }
}

/// Pins a revision, so the retention schedule never removes it, or unpins it.
#[utoipa::path(post, path = "/api/v1/files/pin", request_body = PinRequest, responses((status = 200, body = Revision), (status = 404, body = tessera_proto::ErrorBody, description = "no such file or revision"), (status = 409, body = tessera_proto::ErrorBody, description = "the path is a folder")), security(("bearer" = [])))]
pub async fn pin(
    State(state): State<AppState>,
    user: AuthUser,
    J(req): J<PinRequest>,
) -> Result<Json<Revision>, ApiError> {
    let path = below_root(&req.path)?;
    let at = place::write(&state, &user, &path).await?;
    let row = state
        .meta
        .pin_revision(at.ns, at.file()?, req.rev, req.pinned)
        .await?;
    Ok(Json(revision(&row)))
}

#[utoipa::path(post, path = "/api/v1/files/restore", request_body = RestoreRequest, responses((status = 200, body = Entry), (status = 404, body = tessera_proto::ErrorBody), (status = 409, body = tessera_proto::ErrorBody, description = "the path is a folder")), security(("bearer" = [])))]
pub async fn restore(
    State(state): State<AppState>,
    user: AuthUser,
    J(req): J<RestoreRequest>,
) -> Result<Json<Entry>, ApiError> {
    let path = below_root(&req.path)?;
    let at = place::write(&state, &user, &path).await?;
    let node = state
        .meta
        .restore(at.ns, at.file()?, req.rev, &user.device)
        .await?;
    Ok(Json(entry(&node, &path)))
}

/// The block list of the upload under way at `path` (streaming sync).
#[utoipa::path(get, path = "/api/v1/files/pending", params(PathQuery), responses((status = 200, body = PendingListResponse), (status = 404, body = tessera_proto::ErrorBody, description = "no upload is under way at this path"), (status = 409, body = tessera_proto::ErrorBody, description = "the path is a folder")), security(("bearer" = [])))]
pub async fn pending_list(
    State(state): State<AppState>,
    user: AuthUser,
    Q(q): Q<PathQuery>,
) -> Result<Json<PendingListResponse>, ApiError> {
    let path = below_root(&q.path)?;
    let at = place::read(&state, &user, &path).await?;
    let list = state.meta.pending_list(at.ns, at.file()?).await?;
    Ok(Json(PendingListResponse {
        path: path.to_string(),
        size: list.size,
        content_hash: list.content_hash,
        chunker: list.chunker,
        blocks: list
            .blocks
            .into_iter()
            .map(|(id, size)| BlockRef { id, size })
            .collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/files/blocks", params(DownloadQuery), responses((status = 200, body = BlockListResponse), (status = 404, body = tessera_proto::ErrorBody), (status = 409, body = tessera_proto::ErrorBody, description = "the path is a folder")), security(("bearer" = [])))]
pub async fn block_list(
    State(state): State<AppState>,
    user: AuthUser,
    Q(q): Q<DownloadQuery>,
) -> Result<Json<BlockListResponse>, ApiError> {
    let path = below_root(&q.path)?;
    let at = place::read(&state, &user, &path).await?;
    let (node, rev, blocks) = state.meta.file_revision(at.ns, at.file()?, q.rev).await?;
    Ok(Json(BlockListResponse {
        entry: entry(&node, &path),
        chunker: rev.chunker,
        blocks: blocks
            .iter()
            .map(|b| BlockRef {
                id: b.id,
                size: b.size,
            })
            .collect(),
    }))
}
