//! What the file watcher saw change since the last scan took it: the paths,
//! or "everything" when the watcher cannot say (before the first scan, after
//! it lost events, when too many paths piled up). A scan takes the set and
//! looks only there ([`super::scan::rescan`]); anything that changes after
//! the take is in the next set.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// Paths kept at most; beyond, the next scan is a whole one anyway.
const MOST: usize = 10_000;

#[derive(Debug)]
pub struct Dirty {
    inner: Mutex<Seen>,
}

#[derive(Debug)]
struct Seen {
    all: bool,
    paths: BTreeSet<String>,
}

impl Default for Dirty {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Seen {
                all: true,
                paths: BTreeSet::new(),
            }),
        }
    }
}

impl Dirty {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Something changed at `path` (relative to the synced folder, `/`
    /// between names).
    pub fn mark(&self, path: String) {
        let mut seen = self.seen();
        if seen.all {
            return;
        }
        seen.paths.insert(path);
        if seen.paths.len() > MOST {
            seen.all = true;
            seen.paths.clear();
        }
    }

    /// Anything may have changed: the next scan is a whole one.
    pub fn mark_all(&self) {
        let mut seen = self.seen();
        seen.all = true;
        seen.paths.clear();
    }

    /// What changed since the last take: `None` for "anything".
    pub fn take(&self) -> Option<BTreeSet<String>> {
        let mut seen = self.seen();
        let all = std::mem::replace(&mut seen.all, false);
        let paths = std::mem::take(&mut seen.paths);
        (!all).then_some(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_first_then_what_was_marked_then_everything_when_asked() {
        let d = Dirty::default();
        d.mark("a".into());
        assert_eq!(d.take(), None, "the first scan is a whole one");
        assert_eq!(d.take(), Some(BTreeSet::new()));
        d.mark("a/b".into());
        d.mark("c".into());
        let taken = d.take().unwrap_or_default();
        assert_eq!(taken.into_iter().collect::<Vec<_>>(), ["a/b", "c"]);
        d.mark("x".into());
        d.mark_all();
        assert_eq!(d.take(), None);
        for i in 0..=MOST {
            d.mark(format!("f{i}"));
        }
        assert_eq!(d.take(), None, "too many paths make a whole scan");
    }
}
