//! Typed calls to the server's HTTP API.

use bytes::Bytes;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tessera_proto::api::{
    BlockCodec, BlockListResponse, BlockRef, ChangesResponse, CommitBatchRequest,
    CommitBatchResponse, CommitRequest, CommitResult, CursorResponse, Entry, FetchBlocksRequest,
    ListResponse, LoginRequest, LoginResponse, MissingRequest, MissingResponse, MkdirBatchRequest,
    MkdirBatchResponse, MoveRequest, PackResponse, PathQuery, PendingListResponse, PollResponse,
    PresenceResponse, RestoreRequest, Revision, RevisionsResponse, ServerInfo,
};
use tessera_proto::error::{ErrorBody, ErrorCode};
use tessera_proto::{API_PREFIX, BlockId};
use url::Url;

mod accounts;
mod answer;
pub use answer::Download;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("server URL `{0}` is not valid: give one like http://127.0.0.1:8080")]
    BadUrl(String),
    #[error("{message} (HTTP {status}, {code:?})")]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
        current_rev: Option<i64>,
        missing: Vec<BlockId>,
        /// Seconds the server asked to wait (`Retry-After` on 429 and 503).
        retry_after: Option<u64>,
    },
    #[error("unexpected answer from the server (HTTP {status}): {body}")]
    Unexpected { status: u16, body: String },
    /// No connection at all: said once, with what to do about it.
    #[error(
        "cannot reach the server at {server} ({reason}): start it, or if it lives at another \
         address, log in there with `tessera login --server URL --user NAME`"
    )]
    Unreachable { server: String, reason: String },
    #[error("lost the connection to the server: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Integrity(String),
}

/// One item of a batch answer (commits, folders) as a result.
pub(crate) fn item_answer(result: Option<CommitResult>) -> Result<Entry, ClientError> {
    match result {
        Some(CommitResult { entry: Some(e), .. }) => Ok(e),
        Some(CommitResult { error: Some(e), .. }) => Err(ClientError::Api {
            status: 0,
            code: e.code,
            message: e.message,
            current_rev: e.current_rev,
            missing: e.missing,
            retry_after: None,
        }),
        _ => Err(ClientError::Integrity(
            "the server answered fewer items than were sent".into(),
        )),
    }
}

impl ClientError {
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// How long the server asked to wait before trying again, if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ClientError::Api {
                retry_after: Some(secs),
                ..
            } => Some(std::time::Duration::from_secs(*secs)),
            _ => None,
        }
    }

    /// No answer from the server at all (down, or the network is).
    pub fn unreachable(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. } | ClientError::Http(_))
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// A failure to connect names the server once and the deepest cause (the
/// full chain repeats the URL and says nothing a user can act on).
fn unreachable(e: reqwest::Error) -> ClientError {
    if !(e.is_connect() || e.is_timeout()) {
        return ClientError::Http(e);
    }
    let server = e.url().map_or_else(String::new, |u| {
        let mut base = u.clone();
        base.set_path("");
        base.set_query(None);
        base.as_str().trim_end_matches('/').to_owned()
    });
    let mut reason = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        "no answer".to_owned()
    };
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(c) = cause {
        reason = c.to_string();
        cause = c.source();
    }
    ClientError::Unreachable { server, reason }
}

/// How long a read keeps coming back to a server that answers 503 with
/// `Retry-After` (restarting, failing over its database, or turning away
/// a crowd) before the caller sees the error.
const UNAVAILABLE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether sending `req` twice does no more than sending it once: reads,
/// and blocks (named by their content). A change may have been made by an
/// attempt whose answer was a 503 (the database failed while committing),
/// so changes are never sent again by themselves.
fn harmless_twice(req: &reqwest::Request) -> bool {
    match *req.method() {
        Method::GET | Method::HEAD => true,
        Method::PUT => req.url().path().contains("/blocks/"),
        _ => false,
    }
}

/// The wait an answer's `Retry-After` asks for (seconds form).
fn retry_after(resp: &reqwest::Response) -> Option<std::time::Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(std::time::Duration::from_secs)
}

/// One server, as one logged-in device (or not yet logged in).
#[derive(Clone)]
pub struct Remote {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Remote {
    pub fn new(server: &str, token: Option<String>) -> Result<Self, ClientError> {
        let base = Url::parse(server).map_err(|_| ClientError::BadUrl(server.to_owned()))?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(ClientError::BadUrl(server.to_owned()));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("tessera/", env!("CARGO_PKG_VERSION")))
            // The server closes a keep-alive connection idle for 30 s (its
            // header timeout); dropping ours sooner keeps a request from
            // being sent on a connection the server is closing.
            .pool_idle_timeout(std::time::Duration::from_secs(20))
            .build()?;
        Ok(Self { http, base, token })
    }

    pub fn server(&self) -> &str {
        self.base.as_str()
    }

    pub fn with_token(mut self, token: String) -> Self {
        self.token = Some(token);
        self
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let prefix = self.base.path().trim_end_matches('/');
        url.set_path(&format!("{prefix}{API_PREFIX}{path}"));
        url
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends `req`, turning error statuses into [`ClientError::Api`].
    pub async fn send(req: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let began = std::time::Instant::now();
        let (client, request) = req.build_split();
        let mut request = request?;
        let resend = harmless_twice(&request);
        if let Some(n) = request.body().and_then(reqwest::Body::as_bytes) {
            crate::transfer::limit::up(n.len() as u64).await;
        }
        let resp = loop {
            // A body that streams cannot be sent twice; the caller then
            // sees the 503 and its Retry-After, as for a change.
            let again = if resend { request.try_clone() } else { None };
            let resp = client.execute(request).await.map_err(unreachable)?;
            if resp.status() == StatusCode::SERVICE_UNAVAILABLE
                && let (Some(again), Some(wait)) = (again, retry_after(&resp))
                && began.elapsed() + wait <= UNAVAILABLE_PATIENCE
            {
                tracing::info!(
                    wait_secs = wait.as_secs(),
                    "the server is unavailable for a moment: retrying when it said"
                );
                tokio::time::sleep(wait).await;
                request = again;
                continue;
            }
            break resp;
        };
        if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(match resp.content_length() {
                Some(n) => {
                    crate::transfer::limit::down(n).await;
                    resp
                }
                None => limited_as_read(resp),
            });
        }
        let status = resp.status().as_u16();
        let retry_after = retry_after(&resp).map(|d| d.as_secs());
        let body = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&body) {
            Ok(e) => Err(ClientError::Api {
                status,
                code: e.error.code,
                message: e.error.message,
                current_rev: e.error.current_rev,
                missing: e.error.missing,
                retry_after,
            }),
            Err(_) => Err(ClientError::Unexpected {
                status,
                body: body.chars().take(500).collect(),
            }),
        }
    }

    async fn json<T: DeserializeOwned>(req: RequestBuilder) -> Result<T, ClientError> {
        Ok(Self::send(req).await?.json().await?)
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        Self::json(self.request(Method::POST, path).json(body)).await
    }

    pub async fn info(&self) -> Result<ServerInfo, ClientError> {
        Self::json(self.request(Method::GET, "/info")).await
    }

    pub async fn login(
        &self,
        username: &str,
        password: &str,
        device: &str,
    ) -> Result<LoginResponse, ClientError> {
        let req = LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            device: device.to_owned(),
        };
        self.post("/auth/login", &req).await
    }

    pub async fn logout(&self) -> Result<(), ClientError> {
        Self::send(self.request(Method::POST, "/auth/logout")).await?;
        Ok(())
    }

    pub async fn list(&self, path: &str) -> Result<ListResponse, ClientError> {
        Self::json(
            self.request(Method::GET, "/files/list")
                .query(&[("path", path)]),
        )
        .await
    }

    pub async fn meta(&self, path: &str) -> Result<Entry, ClientError> {
        Self::json(
            self.request(Method::GET, "/files/meta")
                .query(&[("path", path)]),
        )
        .await
    }

    pub async fn mkdir(&self, path: &str) -> Result<Entry, ClientError> {
        self.post(
            "/files/mkdir",
            &PathQuery {
                path: path.to_owned(),
            },
        )
        .await
    }

    pub async fn move_to(&self, from: &str, to: &str) -> Result<Entry, ClientError> {
        self.post(
            "/files/move",
            &MoveRequest {
                from: from.to_owned(),
                to: to.to_owned(),
            },
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.delete_at(path, None).await
    }

    /// Deletes `path` only if it is still at `base_rev` (files).
    pub async fn delete_at(&self, path: &str, base_rev: Option<i64>) -> Result<(), ClientError> {
        let body = tessera_proto::api::DeleteRequest {
            path: path.to_owned(),
            base_rev,
        };
        Self::send(self.request(Method::POST, "/files/delete").json(&body)).await?;
        Ok(())
    }

    pub async fn revisions(&self, path: &str) -> Result<RevisionsResponse, ClientError> {
        Self::json(
            self.request(Method::GET, "/files/revisions")
                .query(&[("path", path)]),
        )
        .await
    }

    pub async fn restore(&self, path: &str, rev: i64) -> Result<Entry, ClientError> {
        self.post(
            "/files/restore",
            &RestoreRequest {
                path: path.to_owned(),
                rev,
            },
        )
        .await
    }

    /// Pins (or with `pinned` false, unpins) a revision.
    pub async fn pin(&self, path: &str, rev: i64, pinned: bool) -> Result<Revision, ClientError> {
        self.post(
            "/files/pin",
            &tessera_proto::api::PinRequest {
                path: path.to_owned(),
                rev,
                pinned,
            },
        )
        .await
    }

    pub async fn block_list(
        &self,
        path: &str,
        rev: Option<i64>,
    ) -> Result<BlockListResponse, ClientError> {
        let mut req = self
            .request(Method::GET, "/files/blocks")
            .query(&[("path", path)]);
        if let Some(rev) = rev {
            req = req.query(&[("rev", rev)]);
        }
        Self::json(req).await
    }

    /// The block list an upload under way at `path` announced, or `None`
    /// when no upload is under way there.
    pub async fn pending_list(
        &self,
        path: &str,
    ) -> Result<Option<PendingListResponse>, ClientError> {
        let req = self
            .request(Method::GET, "/files/pending")
            .query(&[("path", path)]);
        match Self::json(req).await {
            Ok(list) => Ok(Some(list)),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn missing(&self, ids: &[BlockId]) -> Result<Vec<BlockId>, ClientError> {
        let mut missing = Vec::new();
        for batch in ids.chunks(10_000) {
            let resp: MissingResponse = self
                .post(
                    "/blocks/missing",
                    &MissingRequest {
                        ids: batch.to_vec(),
                    },
                )
                .await?;
            missing.extend(resp.missing);
        }
        Ok(missing)
    }

    pub async fn put_block(
        &self,
        id: &BlockId,
        codec: BlockCodec,
        body: Bytes,
    ) -> Result<BlockRef, ClientError> {
        self.put_block_numbered(id, codec, body, None).await
    }

    /// [`Remote::put_block`] of block number `seq` of the upload named
    /// `upload` (see `BlockUploadQuery`), when given.
    pub async fn put_block_numbered(
        &self,
        id: &BlockId,
        codec: BlockCodec,
        body: Bytes,
        numbered: Option<(&str, u32)>,
    ) -> Result<BlockRef, ClientError> {
        let codec = match codec {
            BlockCodec::Raw => "raw",
            BlockCodec::Zstd => "zstd",
        };
        let mut req = self
            .request(Method::PUT, &format!("/blocks/{id}"))
            .query(&[("codec", codec)]);
        if let Some((upload, seq)) = numbered {
            req = req.query(&[("upload", upload)]).query(&[("seq", seq)]);
        }
        Self::json(req.body(body)).await
    }

    /// Fetches a block and checks it against its id.
    pub async fn get_block(&self, id: &BlockId) -> Result<Vec<u8>, ClientError> {
        let resp = Self::send(self.request(Method::GET, &format!("/blocks/{id}"))).await?;
        let codec = answer_codec(&resp);
        let body = resp.bytes().await?;
        let id = *id;
        blocking(move || decode_block(&id, &codec, &body, None)).await
    }

    /// Fetches block `id` for a device that holds `base` (`old`): as a
    /// patch against it when that is smaller, else whole. The block is
    /// checked against its id; a patch that does not rebuild it is an
    /// integrity error (the caller fetches the whole block then).
    pub async fn get_block_patched(
        &self,
        id: &BlockId,
        base: &BlockId,
        old: Vec<u8>,
    ) -> Result<Vec<u8>, ClientError> {
        let req = self
            .request(Method::GET, &format!("/blocks/{id}/patch"))
            .query(&[("base", base.to_string())]);
        let resp = Self::send(req).await?;
        let codec = answer_codec(&resp);
        let body = resp.bytes().await?;
        let id = *id;
        blocking(move || decode_block(&id, &codec, &body, Some(&old))).await
    }

    /// The rsync signature of a block this account holds.
    pub async fn block_signature(&self, id: &BlockId) -> Result<Vec<u8>, ClientError> {
        let resp =
            Self::send(self.request(Method::GET, &format!("/blocks/{id}/signature"))).await?;
        Ok(resp.bytes().await?.to_vec())
    }

    /// Sends block `id` as an rsync delta against `base`.
    pub async fn put_block_delta(
        &self,
        id: &BlockId,
        base: &BlockId,
        codec: BlockCodec,
        body: Bytes,
    ) -> Result<BlockRef, ClientError> {
        let codec = match codec {
            BlockCodec::Raw => "raw",
            BlockCodec::Zstd => "zstd",
        };
        let req = self
            .request(Method::PUT, &format!("/blocks/{id}/delta"))
            .query(&[("base", base.to_string().as_str()), ("codec", codec)])
            .body(body);
        Self::json(req).await
    }

    pub async fn commit(&self, req: &CommitRequest) -> Result<Entry, ClientError> {
        self.post("/files/commit", req).await
    }

    /// [`Remote::commit`] of the numbered upload `upload`, whose blocks the
    /// server hashed as they came.
    pub async fn commit_upload(
        &self,
        req: &CommitRequest,
        upload: &str,
    ) -> Result<Entry, ClientError> {
        let http = self
            .request(Method::POST, "/files/commit")
            .query(&[("upload", upload)])
            .json(req);
        Self::json(http).await
    }

    /// Simple upload of a streamed body.
    pub async fn upload(
        &self,
        path: &str,
        base_rev: Option<i64>,
        body: reqwest::Body,
    ) -> Result<Entry, ClientError> {
        let mut req = self
            .request(Method::PUT, "/files/content")
            .query(&[("path", path)]);
        if let Some(b) = base_rev {
            req = req.query(&[("base_rev", b)]);
        }
        Self::json(req.body(body)).await
    }

    /// Sends a download request as it is and hands back the raw answer,
    /// for callers that look at the HTTP exchange itself. Transfers use
    /// [`Remote::content`], which reads the answer into a [`Download`].
    pub async fn download(
        &self,
        path: &str,
        rev: Option<i64>,
    ) -> Result<reqwest::Response, ClientError> {
        Self::send(self.content_request(path, rev)).await
    }

    fn content_request(&self, path: &str, rev: Option<i64>) -> RequestBuilder {
        let req = self
            .request(Method::GET, "/files/content")
            .query(&[("path", path)]);
        match rev {
            Some(rev) => req.query(&[("rev", rev)]),
            None => req,
        }
    }

    /// Starts a download of the whole file; the caller streams the body.
    pub async fn content(&self, path: &str, rev: Option<i64>) -> Result<Download, ClientError> {
        Download::read(Self::send(self.content_request(path, rev)).await?)
    }

    /// Starts a download of the bytes from `offset` on, if the server still
    /// serves the content tagged `etag` (then [`Download::range_start`] is
    /// set); otherwise the answer is the whole file.
    pub async fn content_from(
        &self,
        path: &str,
        rev: Option<i64>,
        offset: u64,
        etag: &str,
    ) -> Result<Download, ClientError> {
        let req = self
            .content_request(path, rev)
            .header(reqwest::header::RANGE, format!("bytes={offset}-"))
            .header(reqwest::header::IF_RANGE, etag);
        Download::read(Self::send(req).await?)
    }

    /// Journal entries after `cursor` (from the start when `None`).
    pub async fn changes(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<ChangesResponse, ClientError> {
        let mut req = self.request(Method::GET, "/changes");
        if let Some(c) = cursor {
            req = req.query(&[("cursor", c)]);
        }
        if let Some(l) = limit {
            req = req.query(&[("limit", l)]);
        }
        Self::json(req).await
    }

    pub async fn latest_cursor(&self) -> Result<String, ClientError> {
        let resp: CursorResponse = Self::json(self.request(Method::GET, "/changes/latest")).await?;
        Ok(resp.cursor)
    }

    /// Waits up to `timeout_secs` for the journal to move past `cursor`.
    pub async fn poll(&self, cursor: &str, timeout_secs: u64) -> Result<PollResponse, ClientError> {
        let req = self
            .request(Method::GET, "/changes/poll")
            .query(&[("cursor", cursor)])
            .query(&[("timeout", timeout_secs)]);
        Self::json(req).await
    }

    pub async fn presence(&self) -> Result<PresenceResponse, ClientError> {
        Self::json(self.request(Method::GET, "/presence")).await
    }

    /// Uploads many small blocks in one request (see `tessera_proto::pack`).
    pub async fn put_pack(&self, body: Vec<u8>) -> Result<PackResponse, ClientError> {
        Self::json(self.request(Method::POST, "/blocks/pack").body(body)).await
    }

    /// Commits many files in one request and one server transaction.
    pub async fn commit_batch(
        &self,
        commits: Vec<CommitRequest>,
    ) -> Result<CommitBatchResponse, ClientError> {
        self.post("/files/commit_batch", &CommitBatchRequest { commits })
            .await
    }

    /// Makes many folders (and their parents) in one request and one
    /// server transaction: an answer for each path, in order.
    pub async fn mkdir_many(
        &self,
        paths: Vec<String>,
    ) -> Result<Vec<Result<Entry, ClientError>>, ClientError> {
        let asked = paths.len();
        let resp: MkdirBatchResponse = self
            .post("/files/mkdir_batch", &MkdirBatchRequest { paths })
            .await?;
        let mut results = resp.results.into_iter();
        Ok((0..asked).map(|_| item_answer(results.next())).collect())
    }

    /// Fetches many blocks in one request, each checked against its id.
    pub async fn fetch_blocks(
        &self,
        ids: &[BlockId],
    ) -> Result<Vec<(BlockId, Vec<u8>)>, ClientError> {
        let req = self
            .request(Method::POST, "/blocks/fetch")
            .json(&FetchBlocksRequest { ids: ids.to_vec() });
        let body = Self::send(req).await?.bytes().await?;
        tokio::task::spawn_blocking(move || {
            let frames = tessera_proto::pack::decode(&body)
                .map_err(|e| ClientError::Integrity(e.to_string()))?;
            frames
                .into_iter()
                .map(|(id, codec, range)| {
                    let payload = &body[range];
                    let plain = match codec {
                        BlockCodec::Zstd => {
                            zstd::bulk::decompress(payload, tessera_proto::block::MAX_BLOCK)
                                .map_err(|e| {
                                    ClientError::Integrity(format!(
                                        "block {id} does not decompress: {e}"
                                    ))
                                })?
                        }
                        BlockCodec::Raw => payload.to_vec(),
                    };
                    if BlockId::of(&plain) != id {
                        return Err(ClientError::Integrity(format!(
                            "block {id} arrived damaged"
                        )));
                    }
                    Ok((id, plain))
                })
                .collect()
        })
        .await
        .map_err(|e| ClientError::Integrity(e.to_string()))?
    }

    pub async fn trash(&self) -> Result<tessera_proto::api::TrashResponse, ClientError> {
        Self::json(self.request(Method::GET, "/trash")).await
    }

    /// Puts a trashed item back, at `to` or where it was.
    pub async fn restore_from_trash(
        &self,
        id: &str,
        to: Option<&str>,
    ) -> Result<Entry, ClientError> {
        let req = tessera_proto::api::TrashRestoreRequest {
            id: id.to_owned(),
            to: to.map(str::to_owned),
        };
        self.post("/trash/restore", &req).await
    }

    /// Removes one trash entry (`Some(id)`) or all of them (`None`) for good.
    pub async fn purge_trash(&self, id: Option<&str>) -> Result<(), ClientError> {
        self.purge_trash_upto(id, None).await
    }

    /// [`Remote::purge_trash`] of only what was deleted at or before
    /// `deleted_upto_ms` (what the user was shown).
    pub async fn purge_trash_upto(
        &self,
        id: Option<&str>,
        deleted_upto_ms: Option<i64>,
    ) -> Result<(), ClientError> {
        let req = tessera_proto::api::TrashPurgeRequest {
            id: id.map(str::to_owned),
            all: id.is_none(),
            deleted_upto_ms,
        };
        Self::send(self.request(Method::POST, "/trash/purge").json(&req)).await?;
        Ok(())
    }
}

// ---- administration: the server's background workers ----

use tessera_proto::api::WorkersResponse;
pub use tessera_proto::api::{Usage, WorkerState, WorkerStatus};

impl Remote {
    /// The server's workers (administrators only).
    pub async fn workers(&self) -> Result<Vec<WorkerStatus>, ClientError> {
        let resp: WorkersResponse = Self::json(self.request(Method::GET, "/admin/workers")).await?;
        Ok(resp.workers)
    }

    /// Runs one step of the worker `name` now; its status after the step.
    pub async fn run_worker(&self, name: &str) -> Result<WorkerStatus, ClientError> {
        let name: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
        let path = format!("/admin/workers/{name}/run");
        Self::json(self.request(Method::POST, &path)).await
    }

    /// This account's usage and quota.
    pub async fn usage(&self) -> Result<Usage, ClientError> {
        Self::json(self.request(Method::GET, "/usage")).await
    }

    /// A link to the file or folder at `path`; the answer's `url_path` is
    /// its address on this server, shown only this once.
    pub async fn create_link(
        &self,
        req: &tessera_proto::api::CreateLinkRequest,
    ) -> Result<tessera_proto::api::LinkInfo, ClientError> {
        Self::json(self.request(Method::POST, "/links").json(req)).await
    }

    /// This user's links, newest first.
    pub async fn links(&self) -> Result<tessera_proto::api::LinkList, ClientError> {
        Self::json(self.request(Method::GET, "/links")).await
    }

    /// Revokes one of this user's links.
    pub async fn revoke_link(&self, id: &str) -> Result<(), ClientError> {
        let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        let path = format!("/links/{id}");
        Self::send(self.request(Method::DELETE, &path)).await?;
        Ok(())
    }

    /// Shares the folder at `path` (at the top of this user's files) with
    /// `with` as `role`; again with a member, changes their role.
    pub async fn share(
        &self,
        path: &str,
        with: &str,
        role: tessera_proto::api::ShareRole,
    ) -> Result<tessera_proto::api::ShareInfo, ClientError> {
        let req = tessera_proto::api::ShareRequest {
            path: path.to_owned(),
            with: with.to_owned(),
            role,
        };
        Self::json(self.request(Method::POST, "/shares").json(&req)).await
    }

    /// This user's shared folders: owned and shared with them.
    /// This account's signed-in devices.
    /// Entries whose name holds `text`, in any case, across the account.
    pub async fn search(
        &self,
        text: &str,
        limit: Option<usize>,
    ) -> Result<tessera_proto::api::SearchResponse, ClientError> {
        let mut req = self.request(Method::GET, "/search").query(&[("q", text)]);
        if let Some(limit) = limit {
            req = req.query(&[("limit", limit)]);
        }
        Self::json(req).await
    }

    pub async fn devices(&self) -> Result<tessera_proto::api::DeviceList, ClientError> {
        Self::json(self.request(Method::GET, "/devices")).await
    }

    /// Signs out the device `id` (from [`Remote::devices`]).
    pub async fn revoke_device(&self, id: &str) -> Result<(), ClientError> {
        let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        let path = format!("/devices/{id}");
        Self::send(self.request(Method::DELETE, &path)).await?;
        Ok(())
    }

    /// Changes this account's password; every other device is signed out,
    /// this one too with `sign_out_here`.
    pub async fn change_password(
        &self,
        current: &str,
        new: &str,
        sign_out_here: bool,
    ) -> Result<tessera_proto::api::PasswordChanged, ClientError> {
        let req = tessera_proto::api::PasswordChange {
            current_password: current.to_owned(),
            new_password: new.to_owned(),
            sign_out_here,
        };
        self.post("/account/password", &req).await
    }

    pub async fn shares(&self) -> Result<tessera_proto::api::ShareList, ClientError> {
        Self::json(self.request(Method::GET, "/shares")).await
    }

    /// Gives a member of this user's shared folder `id` another role.
    pub async fn set_share_role(
        &self,
        id: i64,
        member: &str,
        role: tessera_proto::api::ShareRole,
    ) -> Result<tessera_proto::api::ShareInfo, ClientError> {
        let req = tessera_proto::api::RoleRequest { role };
        Self::json(
            self.request(Method::PUT, &member_path(id, member))
                .json(&req),
        )
        .await
    }

    /// Removes `member` from the shared folder `id` (this user's own name:
    /// leaves it).
    pub async fn remove_member(&self, id: i64, member: &str) -> Result<(), ClientError> {
        Self::send(self.request(Method::DELETE, &member_path(id, member))).await?;
        Ok(())
    }

    /// Takes the shared folder `id` from everyone but its owner.
    pub async fn unshare(&self, id: i64) -> Result<(), ClientError> {
        Self::send(self.request(Method::DELETE, &format!("/shares/{id}"))).await?;
        Ok(())
    }

    /// A user's usage and quota (administrators only).
    pub async fn quota(&self, user: &str) -> Result<Usage, ClientError> {
        Self::json(self.request(Method::GET, &quota_path(user))).await
    }

    /// Sets a user's quota, `None` for no limit (administrators only).
    pub async fn set_quota(&self, user: &str, bytes: Option<u64>) -> Result<Usage, ClientError> {
        let req = tessera_proto::api::QuotaRequest { quota_bytes: bytes };
        Self::json(self.request(Method::PUT, &quota_path(user)).json(&req)).await
    }
}

fn member_path(id: i64, member: &str) -> String {
    let member: String = url::form_urlencoded::byte_serialize(member.as_bytes()).collect();
    format!("/shares/{id}/members/{member}")
}

fn quota_path(user: &str) -> String {
    let user: String = url::form_urlencoded::byte_serialize(user.as_bytes()).collect();
    format!("/admin/users/{user}/quota")
}

/// How a block answer is encoded (`x-tessera-codec`); raw if unsaid.
fn answer_codec(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(tessera_proto::headers::CODEC)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("raw")
        .to_owned()
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ClientError> + Send + 'static,
) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ClientError::Integrity(e.to_string()))?
}

/// The plain block from an answer encoded as `codec`, checked against
/// `id`; a `patch` answer is applied to `old`.
fn decode_block(
    id: &BlockId,
    codec: &str,
    body: &[u8],
    old: Option<&[u8]>,
) -> Result<Vec<u8>, ClientError> {
    use tessera_proto::block::MAX_BLOCK;
    let plain = match (codec, old) {
        ("zstd", _) => zstd::bulk::decompress(body, MAX_BLOCK)
            .map_err(|e| ClientError::Integrity(format!("block {id} does not decompress: {e}")))?,
        ("patch", Some(old)) => {
            return tessera_proto::delta::unpatch(old, body, id, MAX_BLOCK)
                .map_err(|e| ClientError::Integrity(format!("block {id}: {e}")));
        }
        _ => body.to_vec(),
    };
    if BlockId::of(&plain) != *id {
        return Err(ClientError::Integrity(format!(
            "block {id} arrived damaged"
        )));
    }
    Ok(plain)
}

/// An answer of unknown length (a stream of blocks, a file assembled on
/// the fly) counts against the download limit as it is read: each piece
/// waits its turn before the next is read, so TCP holds the sender back.
fn limited_as_read(resp: reqwest::Response) -> reqwest::Response {
    use futures::StreamExt;
    use reqwest::ResponseBuilderExt;
    let (status, version, headers) = (resp.status(), resp.version(), resp.headers().clone());
    let url = resp.url().clone();
    let pieces = resp.bytes_stream().then(|piece| async move {
        if let Ok(bytes) = &piece {
            crate::transfer::limit::down(bytes.len() as u64).await;
        }
        piece
    });
    let mut limited = http::Response::new(reqwest::Body::wrap_stream(pieces));
    *limited.status_mut() = status;
    *limited.version_mut() = version;
    *limited.headers_mut() = headers;
    // The address, kept for the errors that name it, travels as the
    // builder puts it.
    if let Ok(with_url) = http::Response::builder().url(url).body(()) {
        *limited.extensions_mut() = with_url.into_parts().0.extensions;
    }
    reqwest::Response::from(limited)
}
