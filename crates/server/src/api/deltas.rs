//! Blocks sent as deltas against blocks the other side already has, so an
//! edit of a large file costs about what changed rather than whole blocks:
//!
//! - up: a device fetches the signature of the block its edit replaced
//!   (`GET /blocks/{base}/signature`) and sends its new block as an rsync
//!   delta against it (`PUT /blocks/{id}/delta?base=`);
//! - down: a device that still holds the old block asks for the new one
//!   as a patch against it (`GET /blocks/{id}/patch?base=`).
//!
//! Both sides rebuild with `tessera_proto::delta`, which returns a block
//! only once it hashes to its id, so a bad delta is refused and never
//! stored. The base must be a block the asking user holds, exactly as for
//! downloads: a delta is no way to learn or reach another user's blocks.
//! The work (reading two blocks, diffing or patching up to 16 MiB) takes a
//! turn from a bounded pool of its own, of which one user holds only a few
//! at a time, so cheap requests cannot take every core nor shut other users
//! (or commits' content checks) out.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tessera_proto::api::{BlockCodec, BlockRef, DeltaUploadQuery, PatchQuery};
use tessera_proto::block::MAX_BLOCK;
use tessera_proto::{BlockId, delta};

use super::{ApiError, AppState, AuthUser, Q};
use crate::blocks::Codec;
use crate::meta::BlockLoc;
use crate::turns::Turn;

/// How long a delta request waits for a turn before it is told to retry
/// (or, as clients do, to send the whole block instead).
const TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A delta or patch is at most a whole block of literals plus its commands.
const MAX_DELTA: usize = MAX_BLOCK + (1 << 20);

fn block_id(raw: &str) -> Result<BlockId, ApiError> {
    raw.parse()
        .map_err(|e: tessera_proto::block::InvalidDigest| ApiError::BadRequest(e.to_string()))
}

/// Where a block this user holds is stored; 404 for any other block.
async fn held(state: &AppState, user: &AuthUser, id: &BlockId) -> Result<BlockLoc, ApiError> {
    state
        .meta
        .user_block_location(user.user_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("block {id} does not exist")))
}

/// A turn at delta work for this user (see [`crate::turns`]). It is moved
/// into the blocking task, so it is given back when the work ends even if
/// the client hangs up first.
async fn turn(state: &AppState, user: &AuthUser) -> Result<Turn, ApiError> {
    state
        .delta_turns
        .take(user.user_id, TURN_WAIT)
        .await
        .map_err(|_| {
            ApiError::Throttled(
                "the server is busy: send the whole block, or retry in a moment".into(),
                5,
            )
        })
}

/// Runs `work` on a blocking thread, holding `turn` until it ends.
async fn blocking<T: Send + 'static>(
    turn: Turn,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        work()
    })
    .await
    .map_err(ApiError::internal)
}

fn octets(codec: &'static str, body: Bytes) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::HeaderName::from_static(tessera_proto::headers::CODEC),
                HeaderValue::from_static(codec),
            ),
        ],
        body,
    )
        .into_response()
}

/// The rsync signature (12 bytes per 4 KiB) of a block you hold, for
/// sending a new version of it as a delta.
#[utoipa::path(get, path = "/api/v1/blocks/{id}/signature", params(("id" = String, Path, description = "block id")), responses((status = 200, content_type = "application/octet-stream", description = "the block's rsync signature"), (status = 404, body = tessera_proto::ErrorBody), (status = 429, body = tessera_proto::ErrorBody, description = "busy: send the whole block instead")), security(("bearer" = [])))]
pub async fn signature(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = block_id(&id)?;
    let loc = held(&state, &user, &id).await?;
    let turn = turn(&state, &user).await?;
    let old = state.blocks.read_plain(id, &loc).await?;
    let sig = blocking(turn, move || delta::signature(&old)).await?;
    Ok(octets("raw", Bytes::from(sig)))
}

/// Stores block `id`, sent as an rsync delta against `base`. The block is
/// rebuilt and checked against its id before anything is stored; a delta
/// that does not rebuild it is refused with 422 and stores nothing (send
/// the whole block with `PUT /blocks/{id}`).
#[utoipa::path(put, path = "/api/v1/blocks/{id}/delta", params(("id" = String, Path, description = "block id"), DeltaUploadQuery), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "an rsync delta against base, raw or one zstd frame"), responses((status = 201, body = BlockRef), (status = 400, body = tessera_proto::ErrorBody), (status = 404, body = tessera_proto::ErrorBody, description = "you hold no block base"), (status = 413, body = tessera_proto::ErrorBody), (status = 422, body = tessera_proto::ErrorBody, description = "the delta does not rebuild the block"), (status = 429, body = tessera_proto::ErrorBody)), security(("bearer" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Q(q): Q<DeltaUploadQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<BlockRef>), ApiError> {
    let id = block_id(&id)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!("a delta may be at most {MAX_DELTA} bytes"))
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })?;
    let loc = held(&state, &user, &q.base).await?;
    let turn = turn(&state, &user).await?;
    let old = state.blocks.read_plain(q.base, &loc).await?;
    let base = q.base;
    let rebuilt = blocking(turn, move || -> Result<Vec<u8>, ApiError> {
        let delta = match q.codec {
            BlockCodec::Raw => body.to_vec(),
            BlockCodec::Zstd => zstd::bulk::decompress(&body, MAX_DELTA).map_err(|e| {
                ApiError::BadRequest(format!("the delta is not one zstd frame of at most {MAX_DELTA} bytes: {e}"))
            })?,
        };
        delta::apply(&old, &delta, &id, MAX_BLOCK).map_err(|e| {
            ApiError::HashMismatch(format!(
                "the delta does not rebuild block {id} from block {base} ({e}): send the whole block"
            ))
        })
    })
    .await??;
    let (_, size) = state.blocks.put_plain(user.user_id, rebuilt).await?;
    Ok((StatusCode::CREATED, Json(BlockRef { id, size })))
}

/// Block `id` for a device that still has block `base`: a patch against
/// `base` (`x-tessera-codec: patch`, read with `delta::unpatch`) when that
/// is smaller than the block as stored, else the block as stored (`zstd`
/// or `raw`), so one request always brings the block.
#[utoipa::path(get, path = "/api/v1/blocks/{id}/patch", params(("id" = String, Path, description = "block id"), PatchQuery), responses((status = 200, content_type = "application/octet-stream", description = "a patch against base, or the block as stored; x-tessera-codec says which"), (status = 404, body = tessera_proto::ErrorBody), (status = 429, body = tessera_proto::ErrorBody, description = "busy: fetch the whole block instead")), security(("bearer" = [])))]
pub async fn patch(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Q(q): Q<PatchQuery>,
) -> Result<Response, ApiError> {
    let id = block_id(&id)?;
    let loc = held(&state, &user, &id).await?;
    let base_loc = held(&state, &user, &q.base).await?;
    let turn = turn(&state, &user).await?;
    let new = state.blocks.read(id, &loc).await?;
    let old = state.blocks.read_plain(q.base, &base_loc).await?;
    let plain = new.plain.clone();
    let patch = blocking(turn, move || delta::patch(&old, &plain)).await?;
    if patch.len() < new.payload.len() {
        return Ok(octets("patch", Bytes::from(patch)));
    }
    let codec = match new.codec {
        Codec::Raw => "raw",
        Codec::Zstd => "zstd",
    };
    Ok(octets(codec, new.payload))
}
