//! A download answer read into what Tessera needs of it.

use bytes::Bytes;
use reqwest::StatusCode;
use tessera_proto::ContentHash;

use super::ClientError;

/// A download answer: what the server says the body is, and the body.
pub struct Download {
    /// The whole file's content hash, whatever part of it is sent.
    pub content_hash: ContentHash,
    pub rev: i64,
    pub etag: Option<String>,
    /// Bytes in this answer's body, when the server says.
    pub length: Option<u64>,
    /// Where the body starts in the file when only a part is sent (206);
    /// `Some(None)` when the server sent a part without a readable range.
    pub range_start: Option<Option<u64>>,
    body: reqwest::Response,
}

impl Download {
    pub(super) fn read(resp: reqwest::Response) -> Result<Self, ClientError> {
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_hash = header(tessera_proto::headers::CONTENT_HASH)
            .and_then(|h| h.parse().ok())
            .ok_or_else(|| ClientError::Integrity("server sent no content hash".into()))?;
        let rev = header(tessera_proto::headers::REV)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let range_start = (resp.status() == StatusCode::PARTIAL_CONTENT).then(|| {
            header(reqwest::header::CONTENT_RANGE.as_str())
                .as_deref()
                .and_then(range_start)
        });
        Ok(Self {
            content_hash,
            rev,
            etag: header(reqwest::header::ETAG.as_str()),
            length: resp.content_length(),
            range_start,
            body: resp,
        })
    }

    /// The next piece of the body, `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        Ok(self.body.chunk().await?)
    }
}

/// The first byte of a `Content-Range: bytes FIRST-LAST/TOTAL`.
fn range_start(value: &str) -> Option<u64> {
    value
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_range_gives_its_first_byte() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes 0-0/1"), Some(0));
        assert_eq!(range_start("bytes */200"), None);
        assert_eq!(range_start("items 1-2/3"), None);
        assert_eq!(range_start(""), None);
    }
}
