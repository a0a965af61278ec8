//! The OpenAPI document at `/api/v1/openapi.json`.
//!
//! Each handler's `#[utoipa::path]` lists the answers particular to it (its
//! success, 404, 409, …). The answers every route shares are added here by
//! [`CommonAnswers`], from what the operation is (signed in or not, taking
//! input or not, writing or not), so a new route is described truly
//! without repeating them. `scripts/api-fuzz-test.sh` checks the document
//! against a real server's answers.
//!
//! The shared answers, each with the `ErrorBody` schema: 400 where the
//! operation takes parameters or a body, 413 where it takes a body, 401 where
//! it needs credentials, 403 and 507 where it also writes, 500 everywhere.
//! Signed-in operations accept either scheme: `bearer` (the `Authorization`
//! header) or `cookie` (`tessera_session`).
//!
//! Invariant: every route in `router()` is in the document with every status
//! it can answer. The end-to-end test `openapi` lists the routes, and
//! `scripts/api-fuzz-test.sh` sends schemathesis's generated requests to a
//! real server and fails on a 5xx, an undocumented status, or an answer that
//! does not match its schema. A new route gets its `#[utoipa::path]` and a
//! line in that test's list.

use axum::Json;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    Content, Ref, RefOr, Required, ResponseBuilder, Schema, Type, schema::ObjectBuilder,
};
use utoipa::{OpenApi, ToSchema};

use super::auth::SESSION_COOKIE;

#[derive(OpenApi)]
#[openapi(
    paths(
        super::info,
        super::auth::login,
        super::auth::logout,
        super::files::list,
        super::files::meta,
        super::files::mkdir,
        super::files::mkdir_batch,
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
        super::files::pin,
        super::files::block_list,
        super::files::pending_list,
        super::blocks::missing,
        super::blocks::upload,
        super::blocks::download,
        super::deltas::signature,
        super::deltas::upload,
        super::deltas::patch,
        super::changes::list,
        super::changes::latest,
        super::changes::poll,
        super::changes::presence,
        super::account::devices,
        super::account::revoke,
        super::account::password,
        super::trash::list,
        super::trash::restore,
        super::trash::purge,
        super::view::view,
        super::zip::folder,
        super::tus::options,
        super::tus::create,
        super::tus::head,
        super::tus::patch,
        super::tus::terminate,
        super::admin::workers,
        super::admin::run_worker,
        super::admin::quota,
        super::admin::set_quota,
        super::admin::own_usage,
        super::search::search,
        super::accounts::list,
        super::accounts::add,
        super::accounts::disable,
        super::accounts::enable,
        super::accounts::delete,
        super::accounts::restore,
        super::accounts::reset_password,
        super::links::create,
        super::links::list,
        super::links::revoke,
        super::links::visit,
        super::links::unlock,
        super::links::upload,
        super::links::tus_create,
        super::links::tus_head,
        super::links::tus_patch,
        super::links::tus_delete,
        super::shares::share,
        super::shares::list,
        super::shares::set_role,
        super::shares::remove,
        super::shares::unshare,
        document,
    ),
    modifiers(&CommonAnswers),
    info(
        title = "Tessera API",
        description = "File storage and sync. Errors are JSON: {\"error\": {\"code\", \"message\"}}. \
            Sign in with `POST /api/v1/auth/login` and send the token as `Authorization: Bearer TOKEN` \
            (the web UI gets it as the `tessera_session` cookie instead, and must then send \
            `x-tessera-web: 1` with every request that is not GET or HEAD). \
            Resumable uploads speak TUS 1.0.0 at `/api/v1/tus/` (also reachable as `/api/v1/tus`)."
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
        tessera_proto::api::PinRequest,
        tessera_proto::api::MissingRequest,
        tessera_proto::api::MissingResponse,
        tessera_proto::api::BlockRef,
        tessera_proto::api::BlockCodec,
        tessera_proto::api::CommitRequest,
        tessera_proto::api::Reuse,
        tessera_proto::api::Revision,
        tessera_proto::api::RevisionsResponse,
        tessera_proto::api::BlockListResponse,
        tessera_proto::api::PendingListResponse,
        tessera_proto::api::CreateLinkRequest,
        tessera_proto::api::LinkInfo,
        tessera_proto::api::LinkList,
        tessera_proto::api::ShareRole,
        tessera_proto::api::ShareRequest,
        tessera_proto::api::RoleRequest,
        tessera_proto::api::ShareMember,
        tessera_proto::api::ShareInfo,
        tessera_proto::api::ShareList,
        tessera_proto::api::DeviceInfo,
        tessera_proto::api::DeviceList,
        tessera_proto::api::PasswordChange,
        tessera_proto::api::PasswordChanged,
        tessera_proto::api::SearchResponse,
        tessera_proto::api::Account,
        tessera_proto::api::AccountState,
        tessera_proto::api::AccountList,
        tessera_proto::api::NewAccount,
        tessera_proto::api::NewPassword,
        tessera_proto::api::LinkUploadResponse,
        tessera_proto::api::MkdirBatchRequest,
        tessera_proto::api::MkdirBatchResponse,
        tessera_proto::error::ErrorBody,
        tessera_proto::error::ErrorDetail,
        tessera_proto::error::ErrorCode,
        TusVersion,
        tessera_proto::api::WorkersResponse,
        tessera_proto::api::Usage,
        tessera_proto::api::QuotaRequest,
        tessera_proto::api::WorkerStatus,
        tessera_proto::api::WorkerState,
    ))
)]
struct ApiDoc;

/// The one TUS version this server speaks, as `Tus-Resumable` must say it.
#[derive(ToSchema)]
#[allow(dead_code)] // only its schema is used
pub enum TusVersion {
    #[schema(rename = "1.0.0")]
    V1,
}

/// The answers a route gives by what it is, each with the `ErrorBody`
/// schema: 400 where it takes input, 413 where it takes a body, 401 where
/// it needs credentials, 403 where a cookie-signed write may lack the web
/// header, 507 where it writes, 500 everywhere. Answers a handler lists
/// itself are kept as written.
struct CommonAnswers;

const COMMON: &[(&str, &str, &str)] = &[
    (
        "400",
        "BadRequest",
        "bad input: a malformed query, header or body, or an invalid path; the message says what to fix",
    ),
    (
        "401",
        "Unauthorized",
        "missing, wrong or expired credentials: log in again",
    ),
    (
        "403",
        "Forbidden",
        "signed in by the web session cookie without the header `x-tessera-web: 1`",
    ),
    ("413", "TooLarge", "the request body is too large"),
    (
        "429",
        "RateLimited",
        "too many requests: wait the seconds that Retry-After says",
    ),
    (
        "500",
        "Internal",
        "internal error; the server log has the details",
    ),
    (
        "507",
        "InsufficientStorage",
        "the server's storage is full, or the account's quota (code quota_exceeded)",
    ),
];

impl utoipa::Modify for CommonAnswers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("the token `POST /api/v1/auth/login` returns"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SESSION_COOKIE,
                "the web UI's session cookie, set by a login with `x-tessera-web: 1`; \
                 requests other than GET and HEAD must then carry `x-tessera-web: 1`",
            ))),
        );
        for (_, name, description) in COMMON {
            let answer = ResponseBuilder::new()
                .description(*description)
                .content("application/json", Content::new(Some(error_body())))
                .build();
            components
                .responses
                .insert((*name).to_owned(), answer.into());
        }
        describe_tus_options_per_session(&mut doc.paths.paths);
        for item in doc.paths.paths.values_mut() {
            for (method, op) in [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
                ("options", &mut item.options),
                ("head", &mut item.head),
                ("patch", &mut item.patch),
            ] {
                if let Some(op) = op {
                    add_common_answers(method, op);
                }
            }
        }
    }
}

fn error_body() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name("ErrorBody"))
}

fn add_common_answers(method: &str, op: &mut Operation) {
    let signed_in = op
        .security
        .as_ref()
        .is_some_and(|s| s.iter().any(|r| *r != SecurityRequirement::default()));
    if signed_in {
        // Either way of signing in will do.
        op.security = Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("cookie", Vec::<String>::new()),
        ]);
    }
    let takes_input =
        op.parameters.as_ref().is_some_and(|p| !p.is_empty()) || op.request_body.is_some();
    let writes = !matches!(method, "get" | "head" | "options");
    let applies = |status: &str| match status {
        "400" => takes_input,
        "401" => signed_in,
        "403" => signed_in && writes,
        "413" => op.request_body.is_some(),
        "507" => writes && signed_in,
        "500" => true,
        _ => false,
    };
    let wanted: Vec<_> = COMMON
        .iter()
        .filter(|(status, ..)| applies(status))
        .collect();
    for (status, name, description) in wanted {
        let answer = if method == "head" {
            // A HEAD answer has no body to describe.
            ResponseBuilder::new()
                .description(*description)
                .build()
                .into()
        } else {
            RefOr::Ref(Ref::new(format!("#/components/responses/{name}")))
        };
        op.responses
            .responses
            .entry((*status).to_owned())
            .or_insert(answer);
    }
    // Handlers that list 429 (and the others) write only the status: give
    // them the shared description and body.
    for (status, name, _) in COMMON {
        if let Some(RefOr::T(answer)) = op.responses.responses.get(*status)
            && answer.content.is_empty()
            && method != "head"
        {
            op.responses.responses.insert(
                (*status).to_owned(),
                RefOr::Ref(Ref::new(format!("#/components/responses/{name}"))),
            );
        }
    }
}

/// `OPTIONS /tus/{id}` answers as `OPTIONS /tus/` does (one handler serves
/// both, and a handler has one `#[utoipa::path]`).
fn describe_tus_options_per_session(paths: &mut std::collections::BTreeMap<String, PathItem>) {
    let Some(mut op) = paths
        .get("/api/v1/tus/")
        .and_then(|item| item.options.clone())
    else {
        return;
    };
    op.operation_id = Some("options_session".to_owned());
    let id: Parameter = ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(
            "the upload session, as the creation's Location names it",
        ))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build();
    op.parameters = Some(vec![id]);
    if let Some(item) = paths.get_mut("/api/v1/tus/{id}") {
        item.options = Some(op);
    }
}

#[utoipa::path(get, path = "/api/v1/openapi.json", responses((status = 200, content_type = "application/json", description = "this document (OpenAPI 3.1)")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v.as_str()) {
                        ("$ref", Some(r)) => out.push(r.to_owned()),
                        _ => refs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// A dangling `$ref` breaks every client generator.
    #[test]
    fn every_reference_resolves() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("serializes");
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let pointer = r.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }
}
