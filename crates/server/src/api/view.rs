//! File content for browsers: the download route's bytes (ranges, ETag),
//! typed so that a preview can show them, and fenced so that an uploaded
//! page or image cannot run script in the web UI's origin.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use serde::Deserialize;
use tessera_proto::api::DownloadQuery;

use super::{ApiError, AppState, AuthUser, Q};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ViewQuery {
    pub path: String,
    /// A past revision; the current one when absent.
    #[serde(default)]
    pub rev: Option<i64>,
    /// `1`: always as an attachment (a download), never shown inline.
    #[serde(default)]
    pub download: Option<u8>,
}

/// How a type may be shown: `None` means only as a download.
fn inline_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    let t = match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "bmp" => "image/bmp",
        "ico" => "image/x-icon",
        // Script in an SVG shown by <img> never runs; opened on its own it
        // meets the sandbox policy below.
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "aac" => "audio/aac",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "weba" => "audio/webm",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "ogv" => "video/ogg",
        "mov" => "video/quicktime",
        // Markup and code are shown as what they are: text. With nosniff,
        // an .html file never becomes a page.
        "txt" | "md" | "markdown" | "csv" | "tsv" | "log" | "json" | "jsonl" | "xml" | "yaml"
        | "yml" | "toml" | "ini" | "cfg" | "conf" | "env" | "rs" | "go" | "py" | "rb" | "js"
        | "mjs" | "cjs" | "ts" | "tsx" | "jsx" | "java" | "kt" | "c" | "h" | "cc" | "cpp"
        | "hpp" | "cs" | "swift" | "php" | "sh" | "bash" | "zsh" | "fish" | "ps1" | "sql"
        | "html" | "htm" | "css" | "scss" | "less" | "vue" | "svelte" | "lua" | "pl" | "r"
        | "tex" | "diff" | "patch" | "gitignore" | "dockerfile" | "makefile" | "srt" | "vtt" => {
            "text/plain; charset=utf-8"
        }
        _ => return None,
    };
    Some(t)
}

/// `attachment; filename="…"; filename*=UTF-8''…` (RFC 6266): an ASCII
/// fallback for old clients and the exact name for the rest.
pub(super) fn disposition(kind: &str, name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// The policy for content shown on its own: no script, no plugins, an
/// opaque origin (`sandbox`), and nothing loaded from elsewhere.
const SANDBOX_CSP: &str = "sandbox; default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'self'";
/// Chrome's PDF viewer refuses to run in a sandboxed document; a PDF's own
/// scripts run inside the viewer, never in this origin.
const PDF_CSP: &str = "default-src 'none'; frame-ancestors 'self'";

#[utoipa::path(get, path = "/api/v1/files/view", params(ViewQuery), responses((status = 200, description = "the file, typed for a browser when it is safe to show, else as an attachment"), (status = 206, description = "a byte range"), (status = 304, description = "If-None-Match matched"), (status = 404, body = tessera_proto::ErrorBody), (status = 409, body = tessera_proto::ErrorBody, description = "the path is a folder"), (status = 416, body = tessera_proto::ErrorBody)), security(("bearer" = [])))]
pub async fn view(
    state: State<AppState>,
    user: AuthUser,
    Q(q): Q<ViewQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = q.path.rsplit('/').next().unwrap_or_default().to_owned();
    let query = DownloadQuery {
        path: q.path,
        rev: q.rev,
    };
    let resp = super::files::download(state, user, Q(query), headers).await?;
    typed(resp, &name, q.download != Some(1))
}

/// A download typed for a browser: shown inline (when `inline` and the
/// name says it is a safe kind) or as an attachment, under a sandbox policy
/// either way.
pub(super) fn typed(mut resp: Response, name: &str, inline: bool) -> Result<Response, ApiError> {
    let name = name.to_owned();
    let shown = if inline { inline_type(&name) } else { None };
    let hv = |s: &str| HeaderValue::from_str(s).map_err(ApiError::internal);
    let out = resp.headers_mut();
    match shown {
        Some(t) => {
            out.insert(header::CONTENT_TYPE, HeaderValue::from_static(t));
            out.insert(
                header::CONTENT_DISPOSITION,
                hv(&disposition("inline", &name))?,
            );
        }
        None => {
            out.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            out.insert(
                header::CONTENT_DISPOSITION,
                hv(&disposition("attachment", &name))?,
            );
        }
    }
    let csp = if shown == Some("application/pdf") {
        PDF_CSP
    } else {
        SANDBOX_CSP
    };
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_and_unknown_types_are_never_pages() {
        assert_eq!(inline_type("a.HTML"), Some("text/plain; charset=utf-8"));
        assert_eq!(inline_type("x.exe"), None);
        assert_eq!(inline_type("noext"), None);
        assert_eq!(inline_type("p.JPG"), Some("image/jpeg"));
    }

    #[test]
    fn disposition_keeps_the_exact_name_encoded() {
        let d = disposition("attachment", "rapport é\"1\".pdf");
        assert!(
            d.starts_with("attachment; filename=\"rapport __1_.pdf\""),
            "{d}"
        );
        assert!(
            d.ends_with("filename*=UTF-8''rapport%20%C3%A9%221%22.pdf"),
            "{d}"
        );
    }
}
