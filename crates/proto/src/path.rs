//! Path rules shared by server and clients.
//!
//! A remote path is absolute, `/`-separated, NFC-normalized, with no empty,
//! `.` or `..` segment and no control character. Names are exact: two
//! names that differ only in case are two files, as on Linux, so every file
//! a user has can be kept. Clients on file systems that ignore case settle
//! clashes there (see [`fold_name`]).
//!
//! A name is at most 255 bytes and a path 4096. Names are unique in a folder
//! as NFC strings, case-sensitive (`xt_DSCP.h` and `xt_dscp.h` are two
//! files); [`fold_name`] (NFC, then lowercase) is only the listing's sort key
//! and the clients' clash key. The rule was "unique ignoring case" until the
//! server's migration 0003, which kept the data as it was (names unique
//! ignoring case are unique exactly) and moved the unique index from
//! `name_key` to `name`.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

pub const MAX_NAME_BYTES: usize = 255;
pub const MAX_PATH_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty: give an absolute path such as /docs/report.pdf")]
    Empty,
    #[error("path is {0} bytes long; the limit is {MAX_PATH_BYTES}")]
    TooLong(usize),
    #[error("a name in the path is {0} bytes long; the limit is {MAX_NAME_BYTES}")]
    NameTooLong(usize),
    #[error("path has an empty segment (`//`): remove the doubled slash")]
    EmptySegment,
    #[error("path segments `.` and `..` are not allowed: give the path without them")]
    DotSegment,
    #[error("path contains a NUL or control character: rename it without them")]
    ControlChar,
    #[error("the root folder cannot be used here: give a path below /")]
    Root,
}

/// A validated, normalized absolute path. The root is `/`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemotePath(String);

impl RemotePath {
    pub fn root() -> Self {
        Self("/".to_owned())
    }

    /// Validates and normalizes `raw`. A missing leading slash and one
    /// trailing slash are accepted.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if raw.is_empty() {
            return Err(PathError::Empty);
        }
        let nfc: String = raw.nfc().collect();
        if nfc.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong(nfc.len()));
        }
        let trimmed = nfc.strip_prefix('/').unwrap_or(&nfc);
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Ok(Self::root());
        }
        let mut out = String::with_capacity(trimmed.len() + 1);
        for seg in trimmed.split('/') {
            validate_name(seg)?;
            out.push('/');
            out.push_str(seg);
        }
        Ok(Self(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The names from the root down; empty for the root.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// The last name, or `None` for the root.
    pub fn name(&self) -> Option<&str> {
        if self.is_root() {
            None
        } else {
            self.0.rsplit('/').next()
        }
    }

    pub fn parent(&self) -> Option<RemotePath> {
        if self.is_root() {
            return None;
        }
        match self.0.rfind('/') {
            Some(0) | None => Some(Self::root()),
            Some(i) => Some(Self(self.0[..i].to_owned())),
        }
    }

    /// `self/name`, with `name` validated.
    pub fn join(&self, name: &str) -> Result<RemotePath, PathError> {
        let nfc: String = name.nfc().collect();
        validate_name(&nfc)?;
        let joined = if self.is_root() {
            format!("/{nfc}")
        } else {
            format!("{}/{nfc}", self.0)
        };
        if joined.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong(joined.len()));
        }
        Ok(Self(joined))
    }

    /// True if `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RemotePath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
}

fn validate_name(seg: &str) -> Result<(), PathError> {
    if seg.is_empty() {
        return Err(PathError::EmptySegment);
    }
    if seg == "." || seg == ".." {
        return Err(PathError::DotSegment);
    }
    if seg.len() > MAX_NAME_BYTES {
        return Err(PathError::NameTooLong(seg.len()));
    }
    if seg.chars().any(|c| c.is_control() || c == '/') {
        return Err(PathError::ControlChar);
    }
    Ok(())
}

/// A name as a file system that ignores case sees it: NFC, then
/// lowercase. The server sorts listings by it; names are unique exactly,
/// not by this key.
pub fn fold_name(name: &str) -> String {
    name.nfc().collect::<String>().to_lowercase()
}

impl fmt::Display for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemotePath({})", self.0)
    }
}

/// `name` with ` (n)` before its extension: `report (2).pdf`, `notes (2)`,
/// `.bashrc (2)`.
pub fn numbered_name(name: &str, n: u64) -> String {
    match name.rfind('.') {
        Some(i) if i > 0 => format!("{} ({n}){}", &name[..i], &name[i..]),
        _ => format!("{name} ({n})"),
    }
}

/// `NAME (conflicted copy from DEVICE YYYY-MM-DD HHMMSS).EXT`
pub fn conflicted_name(name: &str, device: &str, unix_secs: i64) -> String {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let (y, m, d, hh, mm, ss) = civil(unix_secs);
    format!(
        "{stem} (conflicted copy from {device} {y:04}-{m:02}-{d:02} {hh:02}{mm:02}{ss:02}){ext}"
    )
}

/// UTC calendar time (year, month, day, hour, minute, second) from Unix
/// seconds (Howard Hinnant's days-from-civil).
pub fn civil(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_goes_before_the_extension() {
        assert_eq!(numbered_name("report.pdf", 2), "report (2).pdf");
        assert_eq!(numbered_name("a.tar.gz", 3), "a.tar (3).gz");
        assert_eq!(numbered_name("notes", 1), "notes (1)");
        assert_eq!(numbered_name(".bashrc", 2), ".bashrc (2)");
    }

    #[test]
    fn accepts_and_normalizes() {
        assert_eq!(
            RemotePath::parse("/a/b.txt").map(|p| p.0),
            Ok("/a/b.txt".into())
        );
        assert_eq!(RemotePath::parse("a/b/").map(|p| p.0), Ok("/a/b".into()));
        assert_eq!(RemotePath::parse("/").map(|p| p.0), Ok("/".into()));
        // "e" + combining acute becomes the single NFC code point.
        assert_eq!(
            RemotePath::parse("/cafe\u{301}").map(|p| p.0),
            Ok("/caf\u{e9}".into())
        );
    }

    #[test]
    fn rejects_bad_paths() {
        for (raw, err) in [
            ("", PathError::Empty),
            ("/a//b", PathError::EmptySegment),
            ("/a/../b", PathError::DotSegment),
            ("/./b", PathError::DotSegment),
            ("/a\0b", PathError::ControlChar),
            ("/a\nb", PathError::ControlChar),
        ] {
            assert_eq!(RemotePath::parse(raw), Err(err), "{raw:?}");
        }
        let long_name = format!("/{}", "x".repeat(256));
        assert_eq!(
            RemotePath::parse(&long_name),
            Err(PathError::NameTooLong(256))
        );
        let long_path = "/abc".repeat(1025);
        assert!(matches!(
            RemotePath::parse(&long_path),
            Err(PathError::TooLong(_))
        ));
    }

    #[test]
    fn parent_name_join() {
        let p = RemotePath::parse("/a/b/c").unwrap();
        assert_eq!(p.name(), Some("c"));
        assert_eq!(p.parent().map(|p| p.0), Some("/a/b".into()));
        assert_eq!(
            RemotePath::parse("/a").ok().and_then(|p| p.parent()),
            Some(RemotePath::root())
        );
        assert_eq!(RemotePath::root().join("x").map(|p| p.0), Ok("/x".into()));
        assert!(p.starts_with(&RemotePath::parse("/a").unwrap()));
        assert!(
            !RemotePath::parse("/ab")
                .unwrap()
                .starts_with(&RemotePath::parse("/a").unwrap())
        );
        assert_eq!(fold_name("Report.PDF"), "report.pdf");
    }
}
