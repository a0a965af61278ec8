//! The trash: what was deleted, and putting it back.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use tessera_proto::RemotePath;
use tessera_proto::api::{
    Entry, EntryKind, TrashEntry, TrashPurgeRequest, TrashResponse, TrashRestoreRequest,
};

use super::files::entry;
use super::place::Places;
use super::{ApiError, AppState, AuthUser, J};
use crate::meta::{MetaError, MountRow};

#[utoipa::path(get, path = "/api/v1/trash", responses((status = 200, body = TrashResponse)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<TrashResponse>, ApiError> {
    // The user's own trash, then that of each shared folder they write to,
    // under its mount point.
    let mut sources = vec![(user.ns, String::new())];
    for m in Places::of(&state, &user).await?.mounts() {
        if m.writable() {
            sources.push((m.namespace_id, format!("/{}", m.name)));
        }
    }
    let mut entries = Vec::new();
    for (ns, prefix) in sources {
        for r in state.meta.trash(ns).await? {
            let folder = r.kind == "folder";
            entries.push(TrashEntry {
                id: r.id,
                path: format!("{prefix}{}", r.deleted_path.unwrap_or_default()),
                kind: if folder {
                    EntryKind::Folder
                } else {
                    EntryKind::File
                },
                size: (!folder).then_some(r.size as u64),
                deleted_ms: r.deleted_ms,
            });
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.deleted_ms));
    Ok(Json(TrashResponse { entries }))
}

#[utoipa::path(post, path = "/api/v1/trash/restore", request_body = TrashRestoreRequest, responses((status = 200, body = Entry), (status = 404, body = tessera_proto::ErrorBody), (status = 409, body = tessera_proto::ErrorBody, description = "the path is taken: give `to`")), security(("bearer" = [])))]
pub async fn restore(
    State(state): State<AppState>,
    user: AuthUser,
    J(req): J<TrashRestoreRequest>,
) -> Result<Json<Entry>, ApiError> {
    let to = req.to.as_deref().map(RemotePath::parse).transpose()?;
    let places = Places::of(&state, &user).await?;
    // The trash entry is the user's own or in a shared folder they write
    // to; `to` must lead into the same one.
    let mut sources: Vec<(i64, Option<&MountRow>)> = vec![(user.ns, None)];
    sources.extend(
        places
            .mounts()
            .iter()
            .filter(|m| m.writable())
            .map(|m| (m.namespace_id, Some(m))),
    );
    if to.is_none()
        && let Some(row) = state
            .meta
            .trash(user.ns)
            .await?
            .into_iter()
            .find(|r| r.id == req.id)
        && let Some(old) = row.deleted_path.as_deref()
        && let Ok(old) = RemotePath::parse(old)
        && places.read(&old)?.mount.is_some()
    {
        // Back at its old path, it would lie under a shared folder's
        // name, out of sight.
        return Err(ApiError::AlreadyExists(format!(
            "{old} is inside a shared folder's name now: give `to`, another place to restore it"
        )));
    }
    for (ns, mount) in sources {
        let target = match &to {
            Some(to) => {
                let at = places.write(to)?;
                if at.ns != ns {
                    continue;
                }
                Some(at.path)
            }
            None => None,
        };
        match state
            .meta
            .restore_from_trash(ns, &req.id, target.as_ref(), &user.device)
            .await
        {
            Ok((node, path)) => {
                let shown = match mount {
                    Some(m) => RemotePath::parse(&format!("/{}{}", m.name, path))?,
                    None => path,
                };
                return Ok(Json(entry(&node, &shown)));
            }
            Err(MetaError::NotFound(_)) if to.is_none() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::NotFound(format!(
        "nothing in the trash has id {}{}",
        req.id,
        if to.is_some() {
            " in the folder you name"
        } else {
            ""
        }
    )))
}

/// Permanent delete: nothing comes back from this, so the request must say
/// exactly what (`id`) or `all`.
#[utoipa::path(post, path = "/api/v1/trash/purge", request_body = TrashPurgeRequest, responses((status = 204, description = "removed for good"), (status = 400, body = tessera_proto::ErrorBody), (status = 404, body = tessera_proto::ErrorBody)), security(("bearer" = [])))]
pub async fn purge(
    State(state): State<AppState>,
    user: AuthUser,
    J(req): J<TrashPurgeRequest>,
) -> Result<StatusCode, ApiError> {
    let id = match (&req.id, req.all) {
        (Some(id), false) => Some(id.as_str()),
        (None, true) => None,
        _ => {
            return Err(ApiError::BadRequest(
                "give either `id` (one trash entry) or `all: true` (empty the trash)".into(),
            ));
        }
    };
    let upto = req.deleted_upto_ms;
    let mut n = match state.meta.purge_trash(user.ns, id, upto).await {
        Err(MetaError::NotFound(_)) if id.is_some() => 0,
        other => other?,
    };
    // One entry of a shared folder's trash goes for good only at its
    // owner's word; `all` empties the user's own trash.
    if let (Some(id), 0) = (id, n) {
        for m in Places::of(&state, &user).await?.mounts() {
            if m.owned() {
                match state.meta.purge_trash(m.namespace_id, Some(id), upto).await {
                    Ok(k) => n += k,
                    Err(MetaError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if n == 0 {
            return Err(ApiError::NotFound(format!(
                "nothing in your trash has id {id}"
            )));
        }
    }
    tracing::info!(user = %user.username, removed = n, "trash purged");
    Ok(StatusCode::NO_CONTENT)
}
