//! The signed-in user's own account: their devices (one a sign-in), and
//! their password.
//!
//! Revoking a device deletes its token: its next request is refused (401),
//! and a sync running there stops and says it was signed out. A password
//! change signs out every other device in the same transaction, and this
//! one too when asked; a wrong current password counts against the login
//! brake like a failed sign-in.

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use std::net::SocketAddr;
use tessera_proto::api::{DeviceInfo, DeviceList, PasswordChange, PasswordChanged};

use super::{ApiError, AppState, AuthUser, J};

/// Bytes of a token's hash that name its device: enough to tell a user's
/// devices apart, and no use to anyone else.
const ID_BYTES: usize = 8;

fn device_id(token_hash: &[u8]) -> String {
    token_hash
        .iter()
        .take(ID_BYTES)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The shortest password accepted.
pub(crate) const MIN_PASSWORD_CHARS: usize = 8;

#[utoipa::path(get, path = "/api/v1/devices", responses((status = 200, body = DeviceList)), security(("bearer" = [])))]
pub async fn devices(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<DeviceList>, ApiError> {
    let polls = crate::instance::presence_everywhere(
        &state.meta,
        &state.presence,
        &state.instance,
        user.user_id,
    )
    .await?;
    let devices = state
        .meta
        .devices_of(user.user_id)
        .await?
        .into_iter()
        .map(|d| {
            let current = d.token_hash.as_slice() == user.token_hash().as_slice();
            // Polls are counted by device name: a name signed in twice
            // shares its count.
            let polls = polls
                .iter()
                .find(|(name, _)| *name == d.device)
                .map_or(0, |(_, n)| *n);
            DeviceInfo {
                id: device_id(&d.token_hash),
                name: d.device,
                client: d.client,
                signed_in_ms: d.created_ms,
                last_seen_ms: d.last_seen_ms,
                polls: polls.into(),
                current,
            }
        })
        .collect();
    Ok(Json(DeviceList { devices }))
}

#[utoipa::path(delete, path = "/api/v1/devices/{id}", params(("id" = String, Path, description = "the device's id from GET /api/v1/devices")), responses((status = 204, description = "signed out"), (status = 404, body = tessera_proto::ErrorBody)), security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let gone = || ApiError::NotFound(format!("you have no device {id}: see GET /api/v1/devices"));
    let device = state
        .meta
        .devices_of(user.user_id)
        .await?
        .into_iter()
        .find(|d| device_id(&d.token_hash) == id)
        .ok_or_else(gone)?;
    if !state
        .meta
        .revoke_token(user.user_id, &device.token_hash)
        .await?
    {
        return Err(gone());
    }
    state.hub.sessions_ended(user.user_id);
    tracing::info!(user = user.user_id, device = %device.device, "device signed out");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/account/password", request_body = PasswordChange, responses((status = 200, body = PasswordChanged), (status = 400, body = tessera_proto::ErrorBody, description = "the new password is too short"), (status = 403, body = tessera_proto::ErrorBody, description = "the current password is wrong"), (status = 429, body = tessera_proto::ErrorBody)), security(("bearer" = [])))]
pub async fn password(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    user: AuthUser,
    J(req): J<PasswordChange>,
) -> Result<axum::response::Response, ApiError> {
    super::accounts::check_new_password(&req.new_password)?;
    if req.current_password.len() > 1024 {
        return Err(ApiError::BadRequest(
            "a password must be at most 1024 bytes".into(),
        ));
    }
    let address = state.proxies.client(peer.ip(), &headers).to_string();
    let checked =
        super::auth::check_password(&state, &user.username, &address, req.current_password)
            .await?
            .ok_or_else(|| {
                ApiError::Forbidden("the current password is wrong: nothing was changed".into())
            })?;
    let hash = super::auth::hash_new_password(&state, req.new_password).await?;
    let keep = (!req.sign_out_here).then_some(&user.token_hash()[..]);
    let signed_out = state
        .meta
        .set_password(user.user_id, &hash, &checked.password_hash, keep)
        .await?;
    state.hub.sessions_ended(user.user_id);
    tracing::info!(user = user.user_id, signed_out, "password changed");
    let body = Json(PasswordChanged { signed_out });
    if req.sign_out_here {
        // A browser signed out here forgets its session cookie too.
        let clear = super::auth::session_cookie_header("", 0, super::auth::over_https(&headers))?;
        return Ok(([(axum::http::header::SET_COOKIE, clear)], body).into_response());
    }
    Ok(body.into_response())
}
