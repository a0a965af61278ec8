//! Administration over HTTP, for administrators only: the background
//! workers' status, and running one now.

use axum::Json;
use axum::extract::{Path, State};

use super::{ApiError, AppState, AuthUser};
use crate::workers::{RunError, WorkerStatus, WorkersResponse};

/// Refuses a signed-in user who is not an administrator.
async fn admin_only(state: &AppState, user: &AuthUser) -> Result<(), ApiError> {
    if state.meta.is_admin(user.user_id).await? {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "{} is not an administrator: only administrators may see or run the server's workers",
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
