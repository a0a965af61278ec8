//! Administration over HTTP, for administrators only: the background
//! workers' status, running one now, and quotas.

use axum::Json;
use axum::extract::{Path, State};

use super::{ApiError, AppState, AuthUser, J};
use crate::workers::{RunError, WorkerStatus, WorkersResponse};
use tessera_proto::api::{QuotaRequest, Usage};

/// Refuses a signed-in user who is not an administrator.
pub(super) async fn admin_only(state: &AppState, user: &AuthUser) -> Result<(), ApiError> {
    if state.meta.is_admin(user.user_id).await? {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "{} is not an administrator: only administrators may manage users, quotas \
             and the server's workers",
            user.username
        )))
    }
}

#[utoipa::path(get, path = "/api/v1/admin/workers", responses((status = 200, body = WorkersResponse), (status = 403, body = tessera_proto::ErrorBody, description = "the user is not an administrator")), security(("bearer" = [])))]
pub async fn workers(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<WorkersResponse>, ApiError> {
    admin_only(&state, &user).await?;
    Ok(Json(WorkersResponse {
        workers: state.workers.statuses(),
    }))
}

/// Runs one step of the worker now (after the one under way, if any) and
/// answers its status after that step.
#[utoipa::path(post, path = "/api/v1/admin/workers/{name}/run", params(("name" = String, Path, description = "the worker, as the list names it")), responses((status = 200, body = WorkerStatus, description = "the worker's status after the step"), (status = 403, body = tessera_proto::ErrorBody, description = "the user is not an administrator"), (status = 404, body = tessera_proto::ErrorBody, description = "no worker has this name; the message lists those there are")), security(("bearer" = [])))]
pub async fn run_worker(
    State(state): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
) -> Result<Json<WorkerStatus>, ApiError> {
    admin_only(&state, &user).await?;
    match state.workers.run_now(&name).await {
        Ok(status) => {
            tracing::info!(user = %user.username, worker = %name, "worker run on request");
            Ok(Json(status))
        }
        Err(e @ RunError::Unknown { .. }) => Err(ApiError::NotFound(e.to_string())),
        // Only while the server shuts down.
        Err(e @ RunError::Stopped) => Err(ApiError::Internal(e.to_string())),
    }
}

async fn usage_of(state: &AppState, name: &str) -> Result<Usage, ApiError> {
    let user = state
        .meta
        .user_by_name(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user named {name}")))?;
    let (used_bytes, quota_bytes) = state.meta.usage(user.id).await?;
    Ok(Usage {
        user: user.username,
        used_bytes,
        quota_bytes,
    })
}

#[utoipa::path(get, path = "/api/v1/admin/users/{name}/quota", params(("name" = String, Path, description = "the user name")), responses((status = 200, body = Usage), (status = 403, body = tessera_proto::ErrorBody, description = "the user is not an administrator"), (status = 404, body = tessera_proto::ErrorBody, description = "no such user")), security(("bearer" = [])))]
pub async fn quota(
    State(state): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
) -> Result<Json<Usage>, ApiError> {
    admin_only(&state, &user).await?;
    Ok(Json(usage_of(&state, &name).await?))
}

/// Sets a user's quota. Usage already over it stays (nothing is deleted);
/// further growth is refused.
#[utoipa::path(put, path = "/api/v1/admin/users/{name}/quota", params(("name" = String, Path, description = "the user name")), request_body = QuotaRequest, responses((status = 200, body = Usage), (status = 403, body = tessera_proto::ErrorBody, description = "the user is not an administrator"), (status = 404, body = tessera_proto::ErrorBody, description = "no such user")), security(("bearer" = [])))]
pub async fn set_quota(
    State(state): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
    J(req): J<QuotaRequest>,
) -> Result<Json<Usage>, ApiError> {
    admin_only(&state, &user).await?;
    let quota = req.quota_bytes.filter(|&q| q > 0);
    state.meta.set_quota(&name, quota).await?;
    tracing::info!(admin = %user.username, user = %name, ?quota, "quota set");
    Ok(Json(usage_of(&state, &name).await?))
}

/// The signed-in user's own usage and quota.
#[utoipa::path(get, path = "/api/v1/usage", responses((status = 200, body = Usage)), security(("bearer" = [])))]
pub async fn own_usage(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<Usage>, ApiError> {
    let (used_bytes, quota_bytes) = state.meta.usage(user.user_id).await?;
    Ok(Json(Usage {
        user: user.username,
        used_bytes,
        quota_bytes,
    }))
}
