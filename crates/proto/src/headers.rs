//! Names of the HTTP headers Tessera adds to its answers and requests.
//! Both sides use these constants, so a renamed header cannot leave one
//! side reading a name the other no longer sends. All lower case: that is
//! how HTTP/2 carries them and what `HeaderName::from_static` accepts.

/// The revision number of the file content in a download answer.
pub const REV: &str = "x-tessera-rev";
/// The content hash (hex) of the whole file in a download answer.
pub const CONTENT_HASH: &str = "x-tessera-content-hash";
/// The stable id of the file in a download answer.
pub const ID: &str = "x-tessera-id";
/// How a block answer is encoded: `zstd` or `raw`, or `patch` for a
/// patch against the asked-for base (see `delta::unpatch`).
pub const CODEC: &str = "x-tessera-codec";
/// Sent as `1` by the web UI with every request that is not GET or HEAD
/// when it signs in by the session cookie.
pub const WEB: &str = "x-tessera-web";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_case_and_distinct() {
        let all = [REV, CONTENT_HASH, ID, CODEC, WEB];
        for name in all {
            assert_eq!(name, name.to_ascii_lowercase(), "{name}");
            assert!(name.starts_with("x-tessera-"), "{name}");
        }
        let distinct: std::collections::BTreeSet<_> = all.into_iter().collect();
        assert_eq!(distinct.len(), all.len());
    }
}
