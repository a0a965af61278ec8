//! Accounts, for administrators: list, add, disable and enable, delete
//! (restorable for the trash period), restore, purge now, and set a
//! password for someone who lost theirs.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use tessera_proto::api::{Account, AccountList, NewAccount, NewPassword, PasswordChanged};

use super::account::MIN_PASSWORD_CHARS;
use super::admin::admin_only;
use super::{ApiError, AppState, AuthUser, J, Q};

/// Account names are what people type to sign in: printable, no spaces.
pub fn check_username(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > super::auth::MAX_USERNAME_BYTES
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "user names are 1 to {} bytes without spaces or control characters",
            super::auth::MAX_USERNAME_BYTES
        ));
    }
    Ok(())
}

/// Passwords set for an account, by its owner or an administrator.
pub fn check_new_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::BadRequest(format!(
            "the new password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > 1024 {
        return Err(ApiError::BadRequest(
            "a password must be at most 1024 bytes".into(),
        ));
    }
    Ok(())
}

fn trash_ttl_ms(state: &AppState) -> Option<i64> {
    state
        .limits
        .trash_ttl
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn one(state: &AppState, name: &str) -> Result<Account, ApiError> {
    let ttl = trash_ttl_ms(state);
    state
        .meta
        .accounts()
        .await?
        .into_iter()
        .find(|a| a.username == name)
        .map(|a| a.view(ttl))
        .ok_or_else(|| ApiError::NotFound(format!("there is no user named {name}")))
}

/// Wakes the held polls of `name`'s devices, so they end now.
async fn wake_polls_of(state: &AppState, name: &str) {
    if let Ok(Some(u)) = state.meta.user_by_name(name).await {
        state.hub.sessions_ended(u.id);
    }
}

/// An administrator may not lock themselves out from their own session.
fn not_oneself(user: &AuthUser, name: &str, what: &str) -> Result<(), ApiError> {
    if user.username == name {
        return Err(ApiError::BadRequest(format!(
            "you cannot {what} the account you are signed in as"
        )));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/admin/users", responses((status = 200, body = AccountList), (status = 403, body = tessera_proto::ErrorBody, description = "the user is not an administrator")), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<AccountList>, ApiError> {
    admin_only(&state, &user).await?;
    let ttl = trash_ttl_ms(&state);
    let users = state
        .meta
        .accounts()
        .await?
        .into_iter()
        .map(|a| a.view(ttl))
        .collect();
    Ok(Json(AccountList { users }))
}

#[utoipa::path(post, path = "/api/v1/admin/users", request_body = NewAccount, responses((status = 201, body = Account), (status = 400, body = tessera_proto::ErrorBody, description = "the name or password is not acceptable"), (status = 403, body = tessera_proto::ErrorBody, description = "the user is not an administrator"), (status = 409, body = tessera_proto::ErrorBody, description = "the name is taken")), security(("bearer" = [])))]
pub async fn add(
    State(state): State<AppState>,
    user: AuthUser,
    J(req): J<NewAccount>,
) -> Result<(StatusCode, Json<Account>), ApiError> {
    admin_only(&state, &user).await?;
    check_username(&req.name).map_err(ApiError::BadRequest)?;
    check_new_password(&req.password)?;
    let hash = super::auth::hash_new_password(&state, req.password).await?;
    state
        .meta
        .create_user_as(&req.name, &hash, req.admin)
        .await?;
    tracing::info!(admin = %user.username, user = %req.name, req.admin, "account added");
    Ok((StatusCode::CREATED, Json(one(&state, &req.name).await?)))
}

#[utoipa::path(post, path = "/api/v1/admin/users/{name}/disable", params(("name" = String, Path, description = "the user name")), responses((status = 200, body = PasswordChanged, description = "disabled; how many devices were signed out"), (status = 400, body = tessera_proto::ErrorBody, description = "oneself, the last administrator, or a deleted account"), (status = 403, body = tessera_proto::ErrorBody), (status = 404, body = tessera_proto::ErrorBody)), security(("bearer" = [])))]
pub async fn disable(
    State(state): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
) -> Result<Json<PasswordChanged>, ApiError> {
    admin_only(&state, &user).await?;
    not_oneself(&user, &name, "disable")?;
    let signed_out = state.meta.set_disabled(&name, true).await?;
    wake_polls_of(&state, &name).await;
    tracing::info!(admin = %user.username, user = %name, signed_out, "account disabled");
    Ok(Json(PasswordChanged { signed_out }))
}

#[utoipa::path(post, path = "/api/v1/admin/users/{name}/enable", params(("name" = String, Path, description = "the user name")), responses((status = 200, body = Account), (status = 403, body = tessera_proto::ErrorBody), (status = 404, body = tessera_proto::ErrorBody)), security(("bearer" = [])))]
pub async fn enable(
    State(state): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
) -> Result<Json<Account>, ApiError> {
    admin_only(&state, &user).await?;
    state.meta.set_disabled(&name, false).await?;
    tracing::info!(admin = %user.username, user = %name, "account enabled");
    Ok(Json(one(&state, &name).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Purge the account's files now instead of after the trash period:
    /// nothing can bring them back.
    #[serde(default)]
    pub now: bool,
}

/// Deletes an account: it can no longer sign in, and its files are kept
/// for the trash period, restorable with `POST …/restore`, then purged.
/// With `now=true` they are purged at once.
#[utoipa::path(delete, path = "/api/v1/admin/users/{name}", params(("name" = String, Path, description = "the user name"), DeleteQuery), responses((status = 200, body = Account, description = "deleted: when its files go"), (status = 204, description = "purged now"), (status = 400, body = tessera_proto::ErrorBody, description = "oneself or the last administrator"), (status = 403, body = tessera_proto::ErrorBody), (status = 404, body = tessera_proto::ErrorBody)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
    Q(q): Q<DeleteQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    admin_only(&state, &user).await?;
    not_oneself(&user, &name, "delete")?;
    state.meta.delete_account(&name).await?;
    wake_polls_of(&state, &name).await;
    tracing::info!(admin = %user.username, user = %name, now = q.now, "account deleted");
    if q.now {
        let row = one(&state, &name).await?;
        let id = state
            .meta
            .accounts()
            .await?
            .into_iter()
            .find(|a| a.username == row.name)
            .map(|a| a.id)
            .ok_or_else(|| ApiError::NotFound(format!("there is no user named {name}")))?;
        if !state.meta.purge_account(id, i64::MAX).await? {
            return Err(ApiError::AlreadyExists(format!(
                "{name} was restored meanwhile: nothing was purged"
            )));
        }
        tracing::info!(admin = %user.username, user = %name, "account purged");
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(Json(one(&state, &name).await?).into_response())
}

#[utoipa::path(post, path = "/api/v1/admin/users/{name}/restore", params(("name" = String, Path, description = "the user name")), responses((status = 200, body = Account), (status = 400, body = tessera_proto::ErrorBody, description = "not deleted, or already being purged"), (status = 403, body = tessera_proto::ErrorBody), (status = 404, body = tessera_proto::ErrorBody)), security(("bearer" = [])))]
pub async fn restore(
    State(state): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
) -> Result<Json<Account>, ApiError> {
    admin_only(&state, &user).await?;
    state.meta.restore_account(&name).await?;
    tracing::info!(admin = %user.username, user = %name, "account restored");
    Ok(Json(one(&state, &name).await?))
}

/// Sets someone's password; every device of theirs is signed out.
#[utoipa::path(put, path = "/api/v1/admin/users/{name}/password", params(("name" = String, Path, description = "the user name")), request_body = NewPassword, responses((status = 200, body = PasswordChanged), (status = 400, body = tessera_proto::ErrorBody, description = "the password is not acceptable"), (status = 403, body = tessera_proto::ErrorBody), (status = 404, body = tessera_proto::ErrorBody)), security(("bearer" = [])))]
pub async fn reset_password(
    State(state): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
    J(req): J<NewPassword>,
) -> Result<Json<PasswordChanged>, ApiError> {
    admin_only(&state, &user).await?;
    // One's own goes through `POST /api/v1/account/password`, which asks
    // for the current one.
    not_oneself(&user, &name, "reset the password of")?;
    check_new_password(&req.password)?;
    let hash = super::auth::hash_new_password(&state, req.password).await?;
    let signed_out = state.meta.reset_password(&name, &hash).await?;
    wake_polls_of(&state, &name).await;
    tracing::info!(admin = %user.username, user = %name, signed_out, "password reset");
    Ok(Json(PasswordChanged { signed_out }))
}
