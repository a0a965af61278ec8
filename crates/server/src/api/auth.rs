//! Login, logout and the bearer-token extractor.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use tessera_proto::api::{LoginRequest, LoginResponse};

use super::{ApiError, AppState, J};
use crate::auth::{dummy_hash, new_token, token_hash, verify_password};
use crate::meta::now_ms;

/// Device tokens live this long; logging in again issues a new one.
const TOKEN_LIFETIME_MS: i64 = 90 * 24 * 3600 * 1000;

/// The user a valid bearer token belongs to.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: i64,
    pub username: String,
    pub ns: i64,
    pub device: String,
    token_hash: [u8; 32],
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        // Looked up by hash: the stored value is not the secret, and the
        // token's 256 bits make guessing a hash prefix worthless.
        let hash = token_hash(token);
        let row = state
            .meta
            .token(&hash)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if row.expires_ms <= now_ms() {
            return Err(ApiError::Unauthorized);
        }
        Ok(AuthUser {
            user_id: row.user_id,
            username: row.username,
            ns: row.root_ns,
            device: row.device,
            token_hash: hash,
        })
    }
}

#[utoipa::path(post, path = "/api/v1/auth/login", request_body = LoginRequest, responses((status = 200, body = LoginResponse), (status = 401, body = tessera_proto::ErrorBody), (status = 429, body = tessera_proto::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    J(req): J<LoginRequest>,
) -> Result<(StatusCode, Json<LoginResponse>), ApiError> {
    let address = peer.ip().to_string();
    if req.device.trim().is_empty() || req.device.len() > 200 {
        return Err(ApiError::BadRequest(
            "device must be a name of 1 to 200 bytes".into(),
        ));
    }
    state
        .limiter
        .check(&req.username, &address)
        .map_err(ApiError::RateLimited)?;
    let user = state.meta.user_by_name(&req.username).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let password = req.password.clone();
    let ok = tokio::task::spawn_blocking(move || match &stored {
        Some(hash) => verify_password(&password, hash),
        None => {
            // Same work as a real check, so timing does not reveal the name.
            let _ = verify_password(&password, dummy_hash());
            false
        }
    })
    .await
    .map_err(ApiError::internal)?;
    let Some(user) = user.filter(|_| ok) else {
        state.limiter.failed(&req.username, &address);
        tracing::info!(username = %req.username, %address, "failed login");
        return Err(ApiError::Unauthorized);
    };
    state.limiter.succeeded(&req.username);
    let (token, hash) = new_token();
    let device = req.device.trim().to_owned();
    state
        .meta
        .insert_token(&hash, user.id, &device, now_ms() + TOKEN_LIFETIME_MS)
        .await?;
    tracing::info!(username = %user.username, %device, "login");
    Ok((
        StatusCode::OK,
        Json(LoginResponse {
            token,
            username: user.username,
            device,
        }),
    ))
}

#[utoipa::path(post, path = "/api/v1/auth/logout", responses((status = 204, description = "token revoked")), security(("bearer" = [])))]
pub async fn logout(State(state): State<AppState>, user: AuthUser) -> Result<StatusCode, ApiError> {
    state.meta.delete_token(&user.token_hash).await?;
    Ok(StatusCode::NO_CONTENT)
}
