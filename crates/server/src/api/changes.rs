//! The change journal: page through it from a cursor, learn the latest
//! cursor, long-poll for news, and see which devices are listening.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use rand::Rng;
use tessera_proto::api::{
    Change, ChangesQuery, ChangesResponse, CursorResponse, DevicePresence, EntryKind, PollQuery,
    PollResponse, PresenceResponse,
};
use tessera_proto::cursor::Cursor;

use super::{ApiError, AppState, AuthUser, Q};
use crate::meta::JournalRow;

const DEFAULT_LIMIT: u32 = 1000;
const MAX_LIMIT: u32 = 10_000;
const DEFAULT_POLL_SECS: u64 = 60;
const MAX_POLL_SECS: u64 = 300;
/// What a poll cut short by shutdown tells clients to wait, so a restart
/// is not met by every client at once.
const SHUTDOWN_BACKOFF_SECS: u64 = 5;
/// What a poll over the user's cap is told to wait.
const POLL_CAP_RETRY_SECS: u64 = 30;

fn cursor_for(user: &AuthUser, raw: Option<&str>) -> Result<i64, ApiError> {
    let Some(raw) = raw else { return Ok(0) };
    let cursor = Cursor::parse(raw).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if cursor.0.keys().any(|ns| *ns != user.ns) {
        return Err(ApiError::BadRequest(
            "this cursor belongs to another account: start again without a cursor".into(),
        ));
    }
    Ok(cursor.seq(user.ns))
}

fn change(row: JournalRow) -> Change {
    let node = if row.node_kind == "folder" {
        EntryKind::Folder
    } else {
        EntryKind::File
    };
    let content_hash = row.content_hash();
    Change {
        node,
        size: row.size.map(|s| s as u64),
        content_hash,
        seq: row.seq,
        kind: row.kind,
        id: row.node_id,
        path: row.path,
        old_path: row.old_path,
        rev: row.rev,
        device: row.device,
        time_ms: row.created_ms,
    }
}

#[utoipa::path(get, path = "/api/v1/changes", params(ChangesQuery), responses((status = 200, body = ChangesResponse), (status = 400, body = tessera_proto::ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Q(q): Q<ChangesQuery>,
) -> Result<Json<ChangesResponse>, ApiError> {
    let after = cursor_for(&user, q.cursor.as_deref())?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let mut rows = state
        .meta
        .changes(user.ns, after, i64::from(limit) + 1)
        .await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let last = rows.last().map_or(after, |r| r.seq);
    Ok(Json(ChangesResponse {
        changes: rows.into_iter().map(change).collect(),
        cursor: Cursor::at(user.ns, last).encode(),
        has_more,
    }))
}

#[utoipa::path(get, path = "/api/v1/changes/latest", responses((status = 200, body = CursorResponse)), security(("bearer" = [])))]
pub async fn latest(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<CursorResponse>, ApiError> {
    let seq = state.meta.journal_seq(user.ns).await?;
    Ok(Json(CursorResponse {
        cursor: Cursor::at(user.ns, seq).encode(),
    }))
}

/// Returns at once if the journal is past the cursor, else when it moves,
/// else after the timeout (jittered by up to a tenth, so clients that
/// started together drift apart).
#[utoipa::path(get, path = "/api/v1/changes/poll", params(PollQuery), responses((status = 200, body = PollResponse), (status = 429), (status = 503, body = tessera_proto::ErrorBody, description = "more new polls than the instance admits a second: retry after Retry-After")), security(("bearer" = [])))]
pub async fn poll(
    State(state): State<AppState>,
    user: AuthUser,
    Q(q): Q<PollQuery>,
) -> Result<Json<PollResponse>, ApiError> {
    let after = cursor_for(&user, Some(&q.cursor))?;
    state
        .poll_admission
        .admit_user(user.user_id)
        .map_err(|secs| {
            ApiError::Throttled(
            "this account opens long polls too fast: wait for each poll's answer before the next"
                .into(),
            secs,
        )
        })?;
    let _present = state
        .presence
        .enter(user.user_id, &user.device)
        .map_err(|e| ApiError::Throttled(e.to_string(), POLL_CAP_RETRY_SECS))?;
    let mut stop = state.hub.shutdown_signal();
    let backoff = PollResponse {
        changes: false,
        backoff: Some(SHUTDOWN_BACKOFF_SECS),
    };
    if *stop.borrow() {
        return Ok(Json(backoff));
    }
    // Subscribe before reading the journal, so a change between the two
    // still wakes us.
    let mut news = state
        .hub
        .subscribe(user.ns)
        .ok_or_else(|| ApiError::internal("notification hub unavailable"))?;
    if state.meta.journal_seq(user.ns).await? > after {
        return Ok(Json(PollResponse {
            changes: true,
            backoff: None,
        }));
    }
    // Only a poll that will be held draws from the instance's share.
    state.poll_admission.admit().map_err(|secs| {
        ApiError::Unavailable(
            "too many clients are arriving at once: retry after the seconds Retry-After says"
                .into(),
            secs,
        )
    })?;
    let secs = q
        .timeout
        .unwrap_or(DEFAULT_POLL_SECS)
        .clamp(1, MAX_POLL_SECS);
    let jitter = rand::rng().random_range(0..=secs * 100);
    let deadline = tokio::time::sleep(Duration::from_secs(secs) + Duration::from_millis(jitter));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return Ok(Json(PollResponse { changes: false, backoff: None })),
            _ = stop.changed() => return Ok(Json(backoff)),
            moved = news.changed() => {
                if moved.is_err() {
                    return Ok(Json(backoff));
                }
                if *news.borrow_and_update() > after {
                    return Ok(Json(PollResponse { changes: true, backoff: None }));
                }
            }
        }
    }
}

#[utoipa::path(get, path = "/api/v1/presence", responses((status = 200, body = PresenceResponse)), security(("bearer" = [])))]
pub async fn presence(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<PresenceResponse>, ApiError> {
    let all = crate::instance::presence_everywhere(
        &state.meta,
        &state.presence,
        &state.instance,
        user.user_id,
    )
    .await?;
    let devices = all
        .into_iter()
        .map(|(device, connections)| DevicePresence {
            device,
            connections,
        })
        .collect();
    Ok(Json(PresenceResponse { devices }))
}
