//! Search by name across everything the user reaches: their own files and
//! the folders shared with them, each shown at the path the user sees.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use tessera_proto::RemotePath;
use tessera_proto::api::{Entry, SearchResponse, ShareRole};

use super::files::entry;
use super::{ApiError, AppState, AuthUser, Q};

const DEFAULT_RESULTS: usize = 50;
const MAX_RESULTS: usize = 200;
/// How long a search waits for its turn before it is refused.
const SEARCH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// The text to find in names, in any case (1 to 255 bytes).
    pub q: String,
    /// At most this many entries (default 50, at most 200).
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/search", params(SearchQuery), responses((status = 200, body = SearchResponse), (status = 400, body = tessera_proto::ErrorBody, description = "no text, or too long")), security(("bearer" = [])))]
pub async fn search(
    State(state): State<AppState>,
    user: AuthUser,
    Q(q): Q<SearchQuery>,
) -> Result<Json<SearchResponse>, ApiError> {
    let text = q.q.trim();
    if text.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "names hold no control characters: search for printable text".into(),
        ));
    }
    if text.is_empty() || text.len() > tessera_proto::path::MAX_NAME_BYTES {
        return Err(ApiError::BadRequest(format!(
            "give 1 to {} bytes of text to search for",
            tessera_proto::path::MAX_NAME_BYTES
        )));
    }
    let limit = q.limit.unwrap_or(DEFAULT_RESULTS).clamp(1, MAX_RESULTS);
    // One search at a time per user, a few at once in all: a search as you
    // type sends many, and each reads the index.
    let _turn = state
        .search_turns
        .take(user.user_id, SEARCH_WAIT)
        .await
        .map_err(|busy| {
            ApiError::Throttled(
                "searching too fast: wait for each answer before the next search".into(),
                busy.0.as_secs().max(1),
            )
        })?;
    let needle = text.to_lowercase();
    let mounts = state.meta.mounts_of(user.user_id).await?;
    let mut entries: Vec<Entry> = Vec::new();
    // Mount points are not nodes of the user's own: matched by their name.
    for m in &mounts {
        let point = m.point();
        let named = point.name().unwrap_or_default();
        if !named.to_lowercase().contains(&needle) || entries.len() == limit {
            continue;
        }
        if let Some(root) = state
            .meta
            .resolve(m.namespace_id, &RemotePath::root())
            .await?
        {
            let mut e = entry(&root, &point);
            e.name = named.to_owned();
            e.shared = Some(ShareRole::from_stored(&m.role));
            entries.push(e);
        }
    }
    let mut namespaces = vec![user.ns];
    namespaces.extend(mounts.iter().map(|m| m.namespace_id));
    let room = limit - entries.len();
    let (hits, more) = state.meta.search_names(&namespaces, text, room).await?;
    for hit in hits {
        let shown = if hit.ns == user.ns {
            hit.path
        } else {
            let Some(m) = mounts.iter().find(|m| m.namespace_id == hit.ns) else {
                continue;
            };
            if hit.path.is_root() {
                continue;
            }
            match RemotePath::parse(&format!("{}{}", m.point(), hit.path)) {
                Ok(p) => p,
                // Deeper than a path may be, seen from this mount point.
                Err(_) => continue,
            }
        };
        entries.push(entry(&hit.node, &shown));
    }
    Ok(Json(SearchResponse { entries, more }))
}
