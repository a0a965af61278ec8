//! Journal cursors: opaque to clients, they hold the last sequence number
//! seen in each namespace (one now; shared folders will add more).

use std::collections::BTreeMap;

const PREFIX: &str = "c1.";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor(pub BTreeMap<i64, i64>);

#[derive(Debug, thiserror::Error)]
#[error("cursor `{0}` is not one this server issued: start again without a cursor")]
pub struct BadCursor(String);

impl Cursor {
    pub fn at(ns: i64, seq: i64) -> Self {
        Self(BTreeMap::from([(ns, seq)]))
    }

    pub fn seq(&self, ns: i64) -> i64 {
        self.0.get(&ns).copied().unwrap_or(0)
    }

    pub fn encode(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(ns, seq)| format!("{ns}-{seq}"))
            .collect();
        format!("{PREFIX}{}", parts.join("."))
    }

    pub fn parse(raw: &str) -> Result<Self, BadCursor> {
        let bad = || BadCursor(raw.chars().take(100).collect());
        let body = raw.strip_prefix(PREFIX).ok_or_else(bad)?;
        let mut map = BTreeMap::new();
        for part in body.split('.').filter(|p| !p.is_empty()) {
            let (ns, seq) = part.split_once('-').ok_or_else(bad)?;
            let ns: i64 = ns.parse().map_err(|_| bad())?;
            let seq: i64 = seq.parse().map_err(|_| bad())?;
            if seq < 0 {
                return Err(bad());
            }
            map.insert(ns, seq);
        }
        Ok(Self(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let c = Cursor::at(7, 42);
        assert_eq!(Cursor::parse(&c.encode()).unwrap(), c);
        assert_eq!(c.seq(7), 42);
        assert_eq!(c.seq(8), 0);
        for bad in ["", "x", "c1.7", "c1.a-1", "c1.7--1", "c2.7-1"] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
    }
}
