//! The OpenAPI document at `/api/v1/openapi.json`.

use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera API",
        description = "File storage and sync. Errors are JSON: {\"error\": {\"code\", \"message\"}}."
    ),
    components(schemas(
        tessera_proto::api::ServerInfo,
        tessera_proto::api::LoginRequest,
        tessera_proto::api::LoginResponse,
        tessera_proto::api::Entry,
        tessera_proto::api::EntryKind,
        tessera_proto::api::ListResponse,
        tessera_proto::api::MoveRequest,
        tessera_proto::api::RestoreRequest,
        tessera_proto::api::MissingRequest,
        tessera_proto::api::MissingResponse,
        tessera_proto::api::BlockRef,
        tessera_proto::api::BlockCodec,
        tessera_proto::api::CommitRequest,
        tessera_proto::api::Revision,
        tessera_proto::api::RevisionsResponse,
        tessera_proto::api::BlockListResponse,
        tessera_proto::error::ErrorBody,
        tessera_proto::error::ErrorDetail,
        tessera_proto::error::ErrorCode,
    ))
)]
struct ApiDoc;

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
