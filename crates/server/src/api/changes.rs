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
use crate::meta::{JournalRow, MountRow};

const DEFAULT_LIMIT: u32 = 1000;
const MAX_LIMIT: u32 = 10_000;
const DEFAULT_POLL_SECS: u64 = 60;
const MAX_POLL_SECS: u64 = 300;
/// How often a held poll looks whether its session still stands, for
/// sign-outs made on another instance (this one's wake it at once).
const TOKEN_RECHECK: Duration = Duration::from_secs(30);
/// What a poll cut short by shutdown tells clients to wait, so a restart
/// is not met by every client at once.
const SHUTDOWN_BACKOFF_SECS: u64 = 5;
/// What a poll over the user's cap is told to wait.
const POLL_CAP_RETRY_SECS: u64 = 30;

/// A cursor holds the user's position in their own journal and in each
/// shared folder they have; one without their own is another account's.
/// Positions in namespaces they no longer have are ignored.
fn cursor_for(user: &AuthUser, raw: Option<&str>) -> Result<Cursor, ApiError> {
    let Some(raw) = raw else {
        return Ok(Cursor::default());
    };
    let cursor = Cursor::parse(raw).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if !cursor.0.is_empty() && !cursor.0.contains_key(&user.ns) {
        return Err(ApiError::BadRequest(
            "this cursor belongs to another account: start again without a cursor".into(),
        ));
    }
    Ok(cursor)
}

/// Where a shared folder's journal is read from: its start for a mount the
/// cursor has not seen made (`after` is the cursor's position in the
/// user's own journal), else the cursor's position in it.
fn start_of(m: &MountRow, cursor: &Cursor, after: i64) -> i64 {
    if m.mount_seq > after {
        0
    } else {
        cursor.seq(m.namespace_id)
    }
}

/// `path` of a shared folder's journal as the member sees it.
fn under(mount: &str, path: &str) -> String {
    if path == "/" {
        format!("/{mount}")
    } else {
        format!("/{mount}{path}")
    }
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
    let cursor = cursor_for(&user, q.cursor.as_deref())?;
    let after = cursor.seq(user.ns);
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as usize;
    let mut rows = state.meta.changes(user.ns, after, limit as i64 + 1).await?;
    let mut has_more = rows.len() > limit;
    rows.truncate(limit);
    let last = rows.last().map_or(after, |r| r.seq);
    let mounts = state.meta.mounts_of(user.user_id).await?;
    // Positions kept for the shared folders when this page reads none of
    // them: where the cursor was, or their start for a mount made since.
    let mut kept = Cursor::at(user.ns, last);
    for m in mounts.iter().filter(|m| m.mount_seq <= last) {
        kept.0.insert(m.namespace_id, start_of(m, &cursor, after));
    }
    let mut changes: Vec<Change> = rows.into_iter().map(change).collect();
    if has_more {
        return Ok(Json(ChangesResponse {
            changes,
            cursor: kept.encode(),
            has_more,
        }));
    }
    // The user's own journal is read to its end: the shared folders'
    // entries follow, under the mount points as they are now.
    let mut next = kept.clone();
    let mut shared = Vec::new();
    let seen: Vec<&MountRow> = mounts.iter().filter(|m| m.mount_seq <= last).collect();
    // One query for where every shared journal stands: most are where the
    // cursor is, and are not read at all.
    let namespaces: Vec<i64> = seen.iter().map(|m| m.namespace_id).collect();
    let heads: std::collections::HashMap<i64, i64> = state
        .meta
        .journal_seqs(&namespaces)
        .await?
        .into_iter()
        .collect();
    for m in seen {
        let from = start_of(m, &cursor, after);
        if heads.get(&m.namespace_id).is_some_and(|head| *head <= from) {
            continue;
        }
        let room = limit - changes.len() - shared.len();
        if room == 0 {
            has_more = true;
            break;
        }
        let mut rows = state
            .meta
            .changes(m.namespace_id, from, room as i64 + 1)
            .await?;
        if rows.len() > room {
            has_more = true;
            rows.truncate(room);
        }
        next.0
            .insert(m.namespace_id, rows.last().map_or(from, |r| r.seq));
        for row in rows {
            let mut c = change(row);
            c.path = under(&m.name, &c.path);
            c.old_path = c.old_path.map(|p| under(&m.name, &p));
            shared.push(c);
        }
    }
    // A mount made, renamed or dropped meanwhile would make those paths
    // wrong: send the user's own entries only, and let the client ask
    // again.
    if !shared.is_empty() && state.meta.journal_seq(user.ns).await? != last {
        return Ok(Json(ChangesResponse {
            changes,
            cursor: kept.encode(),
            has_more: true,
        }));
    }
    changes.extend(shared);
    Ok(Json(ChangesResponse {
        changes,
        cursor: next.encode(),
        has_more,
    }))
}

#[utoipa::path(get, path = "/api/v1/changes/latest", responses((status = 200, body = CursorResponse)), security(("bearer" = [])))]
pub async fn latest(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<CursorResponse>, ApiError> {
    let seq = state.meta.journal_seq(user.ns).await?;
    let mut cursor = Cursor::at(user.ns, seq);
    let mounts = state.meta.mounts_of(user.user_id).await?;
    let namespaces: Vec<i64> = mounts
        .iter()
        .filter(|m| m.mount_seq <= seq)
        .map(|m| m.namespace_id)
        .collect();
    for (ns, at) in state.meta.journal_seqs(&namespaces).await? {
        cursor.0.insert(ns, at);
    }
    Ok(Json(CursorResponse {
        cursor: cursor.encode(),
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
    let cursor = cursor_for(&user, Some(&q.cursor))?;
    let after = cursor.seq(user.ns);
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
    let _held = crate::metrics::PollHeld::begin();
    let mut stop = state.hub.shutdown_signal();
    let mut ended = state.hub.sign_out_signal();
    let backoff = PollResponse {
        changes: false,
        backoff: Some(SHUTDOWN_BACKOFF_SECS),
    };
    if *stop.borrow() {
        return Ok(Json(backoff));
    }
    // Subscribe before reading the journal, so a change between the two
    // still wakes us.
    // The user's own journal, and each shared folder's from where the
    // cursor is (a mount made since moved their own journal already).
    let mut watched = vec![(user.ns, after)];
    for m in state.meta.mounts_of(user.user_id).await? {
        if m.mount_seq <= after {
            watched.push((m.namespace_id, cursor.seq(m.namespace_id)));
        }
    }
    let mut news = Vec::with_capacity(watched.len());
    for (ns, seen) in &watched {
        let rx = state
            .hub
            .subscribe(*ns)
            .ok_or_else(|| ApiError::internal("notification hub unavailable"))?;
        news.push((rx, *seen));
    }
    let namespaces: Vec<i64> = watched.iter().map(|(ns, _)| *ns).collect();
    let now = state.meta.journal_seqs(&namespaces).await?;
    if now
        .iter()
        .any(|(ns, seq)| watched.iter().any(|(w, seen)| w == ns && seq > seen))
    {
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
    // Sessions ended on another instance are only heard by looking.
    let mut recheck = tokio::time::interval(TOKEN_RECHECK);
    recheck.reset();
    loop {
        let waits = news.iter_mut().map(|(rx, _)| Box::pin(rx.changed()));
        let (moved, which) = tokio::select! {
            _ = &mut deadline => return Ok(Json(PollResponse { changes: false, backoff: None })),
            _ = stop.changed() => return Ok(Json(backoff)),
            heard = ended.recv() => {
                match heard {
                    Ok(uid) if uid != user.user_id => {}
                    // Ours, or too many to know: look.
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        still_signed_in(&state, &user).await?;
                    }
                    // Only at shutdown, which `stop` answers.
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        ended = state.hub.sign_out_signal();
                    }
                }
                continue;
            }
            _ = recheck.tick() => {
                still_signed_in(&state, &user).await?;
                continue;
            }
            (moved, which, _) = futures::future::select_all(waits) => (moved.is_ok(), which),
        };
        if !moved {
            return Ok(Json(backoff));
        }
        let Some((rx, seen)) = news.get_mut(which) else {
            return Ok(Json(backoff));
        };
        if *rx.borrow_and_update() > *seen {
            return Ok(Json(PollResponse {
                changes: true,
                backoff: None,
            }));
        }
    }
}

/// 401 once the poll's token no longer stands (revoked, signed out by a
/// password change, the account disabled).
async fn still_signed_in(state: &AppState, user: &AuthUser) -> Result<(), ApiError> {
    match state.meta.token(user.token_hash()).await? {
        Some(t) if t.expires_ms > crate::meta::now_ms() => Ok(()),
        _ => Err(ApiError::Unauthorized),
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
