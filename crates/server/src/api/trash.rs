//! The trash: what was deleted, and putting it back.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use tessera_proto::RemotePath;
use tessera_proto::api::{
    Entry, EntryKind, TrashEntry, TrashPurgeRequest, TrashResponse, TrashRestoreRequest,
};

use super::files::entry;
use super::{ApiError, AppState, AuthUser, J};

#[utoipa::path(get, path = "/api/v1/trash", responses((status = 200, body = TrashResponse)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<TrashResponse>, ApiError> {
    let rows = state.meta.trash(user.ns).await?;
    let entries = rows
        .into_iter()
        .map(|r| {
            let folder = r.kind == "folder";
            TrashEntry {
                id: r.id,
                path: r.deleted_path.unwrap_or_default(),
                kind: if folder {
                    EntryKind::Folder
                } else {
                    EntryKind::File
                },
                size: (!folder).then_some(r.size as u64),
                deleted_ms: r.deleted_ms,
            }
        })
        .collect();
    Ok(Json(TrashResponse { entries }))
}

#[utoipa::path(post, path = "/api/v1/trash/restore", request_body = TrashRestoreRequest, responses((status = 200, body = Entry), (status = 404, body = tessera_proto::ErrorBody), (status = 409, body = tessera_proto::ErrorBody, description = "the path is taken: give `to`")), security(("bearer" = [])))]
pub async fn restore(
    State(state): State<AppState>,
    user: AuthUser,
    J(req): J<TrashRestoreRequest>,
) -> Result<Json<Entry>, ApiError> {
    let to = req.to.as_deref().map(RemotePath::parse).transpose()?;
    let (node, path) = state
        .meta
        .restore_from_trash(user.ns, &req.id, to.as_ref(), &user.device)
        .await?;
    Ok(Json(entry(&node, &path)))
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
    let n = state.meta.purge_trash(user.ns, id).await?;
    tracing::info!(user = %user.username, removed = n, "trash purged");
    Ok(StatusCode::NO_CONTENT)
}
