//! The OpenAPI document at `/api/v1/openapi.json`.

use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    paths(
        super::auth::login,
        super::auth::logout,
        super::files::list,
        super::files::meta,
        super::files::mkdir,
        super::files::move_node,
        super::files::delete,
        super::files::upload,
        super::files::download,
        super::files::commit,
        super::files::commit_batch,
        super::blocks::pack,
        super::blocks::fetch,
        super::files::revisions,
        super::files::restore,
        super::files::block_list,
        super::blocks::missing,
        super::blocks::upload,
        super::blocks::download,
        super::changes::list,
        super::changes::latest,
        super::changes::poll,
        super::changes::presence,
        super::trash::list,
        super::trash::restore,
        super::trash::purge,
        super::view::view,
        super::zip::folder,
    ),
    modifiers(&BearerAuth),
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

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
