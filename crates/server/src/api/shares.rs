//! Shared folders: share a folder with another user as editor or viewer,
//! list what one shares and has, change a member's role, remove a member
//! or leave, unshare. The tree work is in `meta/share_queries.rs`; paths
//! into shared folders are resolved by `place.rs`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tessera_proto::RemotePath;
use tessera_proto::api::{RoleRequest, ShareInfo, ShareList, ShareMember, ShareRequest, ShareRole};

use super::place::Places;
use super::{ApiError, AppState, AuthUser, J};
use crate::meta::{MountRow, UserRow};

fn member_role(role: ShareRole) -> Result<&'static str, ApiError> {
    match role {
        ShareRole::Owner => Err(ApiError::BadRequest(
            "a member is an editor or a viewer; a shared folder has one owner".into(),
        )),
        other => Ok(other.as_str()),
    }
}

/// A shared folder's id from the route; anything else names none.
fn share_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound("no such shared folder".into()))
}

async fn someone(state: &AppState, name: &str) -> Result<UserRow, ApiError> {
    state
        .meta
        .user_by_name(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("there is no user named {name}")))
}

async fn info(state: &AppState, m: &MountRow) -> Result<ShareInfo, ApiError> {
    let members = state.meta.members(m.namespace_id).await?;
    let owner = members
        .iter()
        .find(|x| x.role == "owner")
        .map(|x| x.username.clone())
        .unwrap_or_default();
    Ok(ShareInfo {
        id: m.namespace_id,
        path: format!("/{}", m.name),
        role: ShareRole::from_stored(&m.role),
        owner,
        members: members
            .into_iter()
            .map(|x| ShareMember {
                username: x.username,
                role: ShareRole::from_stored(&x.role),
            })
            .collect(),
    })
}

async fn info_of(state: &AppState, user: &AuthUser, ns: i64) -> Result<ShareInfo, ApiError> {
    let mounts = state.meta.mounts_of(user.user_id).await?;
    let m = mounts
        .iter()
        .find(|m| m.namespace_id == ns)
        .ok_or_else(|| ApiError::NotFound("no such shared folder".into()))?;
    info(state, m).await
}

/// Shares a folder at the top of your files (or one you own already) with
/// another user; sharing again with a member changes their role.
#[utoipa::path(post, path = "/api/v1/shares", request_body = ShareRequest, responses((status = 201, body = ShareInfo), (status = 400, body = tessera_proto::ErrorBody, description = "not a folder at the top of your files, inside a shared folder, or an owner role asked for"), (status = 403, body = tessera_proto::ErrorBody, description = "the folder is shared with you, not yours to share"), (status = 404, body = tessera_proto::ErrorBody, description = "no such folder or user"), (status = 409, body = tessera_proto::ErrorBody, description = "the path is a file")), security(("bearer" = [])))]
pub async fn share(
    State(state): State<AppState>,
    user: AuthUser,
    J(req): J<ShareRequest>,
) -> Result<(StatusCode, Json<ShareInfo>), ApiError> {
    let role = member_role(req.role)?;
    let path = RemotePath::parse(&req.path)?;
    let places = Places::of(&state, &user).await?;
    let at = places.read(&path)?;
    if path.is_root() {
        return Err(ApiError::BadRequest(
            "the top of your files cannot be shared: share a folder in it".into(),
        ));
    }
    if let (Some(m), false) = (&at.mount, at.is_mount()) {
        return Err(ApiError::BadRequest(format!(
            "{path} is inside the shared folder /{}: a shared folder cannot hold another; share \
             /{} itself",
            m.name, m.name
        )));
    }
    let member = someone(&state, &req.with).await?;
    let mount = state
        .meta
        .share_folder(&user.row(), &path, &member, role, &user.device)
        .await?;
    tracing::info!(
        ns = mount.namespace_id,
        member = member.id,
        role,
        "folder shared"
    );
    Ok((
        StatusCode::CREATED,
        Json(info_of(&state, &user, mount.namespace_id).await?),
    ))
}

/// Your shared folders: those you own and those shared with you, each with
/// everyone who has it.
#[utoipa::path(get, path = "/api/v1/shares", responses((status = 200, body = ShareList)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<ShareList>, ApiError> {
    let mut shares = Vec::new();
    for m in state.meta.mounts_of(user.user_id).await? {
        shares.push(info(&state, &m).await?);
    }
    Ok(Json(ShareList { shares }))
}

/// Gives a member of your shared folder another role.
#[utoipa::path(put, path = "/api/v1/shares/{id}/members/{username}", params(("id" = i64, Path, description = "the shared folder's id"), ("username" = String, Path, description = "the member")), request_body = RoleRequest, responses((status = 200, body = ShareInfo), (status = 400, body = tessera_proto::ErrorBody, description = "an owner role asked for, or the owner named"), (status = 403, body = tessera_proto::ErrorBody, description = "only the owner changes roles"), (status = 404, body = tessera_proto::ErrorBody, description = "no such shared folder or member")), security(("bearer" = [])))]
pub async fn set_role(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, username)): Path<(String, String)>,
    J(req): J<RoleRequest>,
) -> Result<Json<ShareInfo>, ApiError> {
    let id = share_id(&id)?;
    let role = member_role(req.role)?;
    let member = someone(&state, &username).await?;
    state
        .meta
        .set_role(user.user_id, id, member.id, role, &user.device)
        .await?;
    Ok(Json(info_of(&state, &user, id).await?))
}

/// Removes a member from your shared folder, or (naming yourself) leaves
/// a folder shared with you. Their devices move their copies to the local
/// trash.
#[utoipa::path(delete, path = "/api/v1/shares/{id}/members/{username}", params(("id" = i64, Path, description = "the shared folder's id"), ("username" = String, Path, description = "the member, or yourself to leave")), responses((status = 204, description = "removed"), (status = 400, body = tessera_proto::ErrorBody, description = "the owner cannot leave or be removed"), (status = 403, body = tessera_proto::ErrorBody, description = "only the owner removes others"), (status = 404, body = tessera_proto::ErrorBody, description = "no such shared folder or member")), security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, username)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = share_id(&id)?;
    let member = someone(&state, &username).await?;
    state
        .meta
        .unmount(user.user_id, id, member.id, &user.device)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Takes your shared folder from everyone else; you keep it as it is.
#[utoipa::path(delete, path = "/api/v1/shares/{id}", params(("id" = i64, Path, description = "the shared folder's id")), responses((status = 204, description = "unshared"), (status = 403, body = tessera_proto::ErrorBody, description = "only the owner unshares"), (status = 404, body = tessera_proto::ErrorBody, description = "no such shared folder")), security(("bearer" = [])))]
pub async fn unshare(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = share_id(&id)?;
    let n = state.meta.unshare(user.user_id, id, &user.device).await?;
    tracing::info!(ns = id, members = n, "folder unshared");
    Ok(StatusCode::NO_CONTENT)
}
