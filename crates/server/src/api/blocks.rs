//! The block protocol: which blocks are missing, upload one, download one.

use std::collections::HashSet;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tessera_proto::BlockId;
use tessera_proto::api::{
    BlockRef, BlockUploadQuery, FetchBlocksRequest, MissingRequest, MissingResponse, PackResponse,
};
use tessera_proto::pack::PackRefused;

use super::{ApiError, AppState, AuthUser, J, Q};
use crate::blocks::codec::SEAL_OVERHEAD;
use crate::blocks::{BlockError, Codec, Ingest};
use crate::uploads::running_hash::valid_upload_name;

/// Ids in one missing-blocks question (a 10 GiB file has ~2,600 blocks).
const MAX_IDS: usize = 20_000;

fn block_id(raw: &str) -> Result<BlockId, ApiError> {
    raw.parse()
        .map_err(|e: tessera_proto::block::InvalidDigest| ApiError::BadRequest(e.to_string()))
}

/// Answers only for the asking user: a block stored by someone else counts
/// as missing until this user uploads it (then it is not stored twice).
#[utoipa::path(post, path = "/api/v1/blocks/missing", request_body = MissingRequest, responses((status = 200, body = MissingResponse)), security(("bearer" = [])))]
pub async fn missing(
    State(state): State<AppState>,
    user: AuthUser,
    J(req): J<MissingRequest>,
) -> Result<Json<MissingResponse>, ApiError> {
    if req.ids.len() > MAX_IDS {
        return Err(ApiError::BadRequest(format!(
            "ask about at most {MAX_IDS} blocks at a time"
        )));
    }
    let missing = state.meta.missing_blocks(user.user_id, &req.ids).await?;
    Ok(Json(MissingResponse { missing }))
}

#[utoipa::path(put, path = "/api/v1/blocks/{id}", params(("id" = String, Path, description = "block id"), BlockUploadQuery), request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses((status = 201, body = BlockRef), (status = 422, body = tessera_proto::ErrorBody, description = "bytes do not hash to id")), security(("bearer" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Q(q): Q<BlockUploadQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<BlockRef>), ApiError> {
    let id = block_id(&id)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge("a block body may be at most 16 MiB".into())
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })?;
    let numbered = match (q.upload, q.seq) {
        (None, None) => None,
        (Some(name), Some(seq)) if valid_upload_name(&name) => Some((name, seq)),
        _ => {
            return Err(ApiError::BadRequest(
                "give `upload` (8 to 64 letters, digits, - or _) and `seq` together, or neither"
                    .into(),
            ));
        }
    };
    // An upload followed here hashes the block as it goes by, so its
    // commit need not read it back.
    let running = state.running_hashes.clone();
    let user_id = user.user_id;
    let size = Ingest::new(state.blocks.clone(), user.user_id)
        .client_block(id, q.codec.into(), body, move |plain| match numbered {
            Some((name, seq)) => running.offer_seq(user_id, &name, seq, id, &plain),
            None => running.offer(user_id, id, &plain),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(BlockRef { id, size })))
}

/// Sends the block as stored (zstd or raw, see `x-tessera-codec`), after
/// the server has checked it against its id.
#[utoipa::path(get, path = "/api/v1/blocks/{id}", params(("id" = String, Path, description = "block id")), responses((status = 200, content_type = "application/octet-stream", description = "the block as stored; x-tessera-codec says zstd or raw"), (status = 404, body = tessera_proto::ErrorBody)), security(("bearer" = [])))]
pub async fn download(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = block_id(&id)?;
    let loc = state
        .meta
        .user_block_location(user.user_id, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("block {id} does not exist")))?;
    let read = state.blocks.read(id, &loc).await?;
    let codec = match read.codec {
        Codec::Raw => "raw",
        Codec::Zstd => "zstd",
    };
    Ok((
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
        read.payload,
    )
        .into_response())
}

/// Many small blocks in one request, stored as one pack object.
#[utoipa::path(post, path = "/api/v1/blocks/pack", request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "frames: id [32] | codec u8 | length u32 LE | payload"), responses((status = 201, body = PackResponse), (status = 422, body = tessera_proto::ErrorBody, description = "a block's bytes do not hash to its id")), security(("bearer" = [])))]
pub async fn pack(
    State(state): State<AppState>,
    user: AuthUser,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PackResponse>), ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!(
                "a pack may be at most {} bytes",
                tessera_proto::pack::MAX_PACK_BYTES
            ))
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })?;
    let frames =
        tessera_proto::pack::decode(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    tessera_proto::pack::check_upload(&frames).map_err(|e| match e {
        PackRefused::Duplicate(_) => ApiError::BadRequest(e.to_string()),
        PackRefused::FrameTooLarge(..) => ApiError::TooLarge(e.to_string()),
    })?;
    let blocks: Vec<_> = frames
        .into_iter()
        .map(|(id, c, range)| (id, c.into(), body.slice(range)))
        .collect();
    let ids: Vec<BlockId> = blocks.iter().map(|(id, ..)| *id).collect();
    let sizes = Ingest::new(state.blocks.clone(), user.user_id)
        .client_pack(blocks)
        .await
        .map_err(|e| match e {
            BlockError::PackFrameTooLarge(_) | BlockError::PackTooLarge => {
                ApiError::TooLarge(e.to_string())
            }
            other => other.into(),
        })?;
    let blocks = ids
        .into_iter()
        .zip(sizes)
        .map(|(id, size)| BlockRef { id, size })
        .collect();
    Ok((StatusCode::CREATED, Json(PackResponse { blocks })))
}

/// Many blocks in one answer, as a pack body; each is checked against its
/// id before it is sent. A block asked for twice is sent once. The answer's
/// size is checked from the metadata before anything is read, and blocks
/// are read a couple at a time as the answer streams, so memory does not
/// grow with the request.
#[utoipa::path(post, path = "/api/v1/blocks/fetch", request_body = FetchBlocksRequest, responses((status = 200, content_type = "application/octet-stream", description = "pack frames, one per distinct block, in the order first asked"), (status = 400, body = tessera_proto::ErrorBody, description = "too many blocks, or more bytes than one answer carries"), (status = 404, body = tessera_proto::ErrorBody)), security(("bearer" = [])))]
pub async fn fetch(
    State(state): State<AppState>,
    user: AuthUser,
    J(req): J<FetchBlocksRequest>,
) -> Result<Response, ApiError> {
    use futures::StreamExt;
    use tessera_proto::pack::{
        MAX_PACK_BLOCKS, MAX_PACK_BYTES, MAX_PACK_PLAIN, frame_header, frame_len,
    };
    if req.ids.len() > MAX_PACK_BLOCKS {
        return Err(ApiError::BadRequest(format!(
            "ask for at most {MAX_PACK_BLOCKS} blocks at a time"
        )));
    }
    let mut seen = HashSet::with_capacity(req.ids.len());
    let ids: Vec<BlockId> = req.ids.into_iter().filter(|id| seen.insert(*id)).collect();
    let known = state.meta.user_blocks(user.user_id, &ids).await?;
    let mut located = Vec::with_capacity(ids.len());
    let (mut total, mut plain) = (0usize, 0u64);
    for id in ids {
        let (len, loc) = known
            .get(&id)
            .ok_or_else(|| ApiError::NotFound(format!("block {id} does not exist")))?;
        // The stored length bounds the payload sent (a block stored as a
        // delta is sent compressed on its own: at most its plain length,
        // which the plain budget bounds); the plain length what reading it
        // costs (each block is decompressed and re-hashed; a delta's base,
        // read too, is at most twice its size), so a few compressible
        // blocks cannot make a small answer expensive.
        total += frame_len((loc.length as usize).saturating_sub(SEAL_OVERHEAD));
        plain += len;
        located.push((id, loc.clone()));
    }
    if total > MAX_PACK_BYTES || plain > MAX_PACK_PLAIN as u64 {
        return Err(ApiError::BadRequest(format!(
            "these blocks come to more than {MAX_PACK_BYTES} bytes: ask for fewer at a time"
        )));
    }
    let store = state.blocks.clone();
    let mut frames = futures::stream::iter(located)
        .map(move |(id, loc)| {
            let store = store.clone();
            async move {
                let (c, payload) = store.read_payload(id, &loc).await?;
                let header = Bytes::copy_from_slice(&frame_header(&id, c.into(), payload.len()));
                Ok::<_, BlockError>(futures::stream::iter([Ok(header), Ok(payload)]))
            }
        })
        .buffered(2)
        .boxed();
    // The first block decides the status; a later failure aborts the body,
    // which the client sees as a broken answer, never as fewer frames.
    let first = match frames.next().await {
        Some(Ok(first)) => Some(first),
        Some(Err(e)) => return Err(e.into()),
        None => None,
    };
    let rest = frames.flat_map(|f| match f {
        Ok(parts) => parts.left_stream(),
        Err(e) => futures::stream::iter([Err(e)]).right_stream(),
    });
    let body = futures::stream::iter(first).flatten().chain(rest);
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        Body::from_stream(body),
    )
        .into_response())
}
