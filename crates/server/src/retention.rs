//! Which old revisions of a file are kept: a pure schedule, applied by the
//! retention worker.
//!
//! Recent history is kept whole and older history thins out, as backups
//! do: every revision of the last `keep_all_secs`, then the last revision
//! of each day for `daily_days`, then the last of each week for
//! `weekly_weeks`; older ones go. The current revision and pinned ones are
//! always kept, whatever their age or `max_revisions`. Days and weeks are
//! calendar buckets in UTC (weeks start on Monday), so a day's survivor is
//! the same revision whenever the schedule runs.

use std::collections::{BTreeSet, HashMap};

const DAY_MS: i64 = 86_400_000;
/// 1970-01-01 was a Thursday: shifting by three days starts weeks on Monday.
const MONDAY_SHIFT_DAYS: i64 = 3;

/// The `[retention]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Every revision younger than this is kept.
    pub keep_all_secs: u64,
    /// Then the last revision of each day, for this many days.
    pub daily_days: u32,
    /// Then the last revision of each week, for this many weeks.
    pub weekly_weeks: u32,
    /// At most this many revisions per file (0: no limit); pinned ones and
    /// the current one are kept beyond it.
    pub max_revisions: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            keep_all_secs: 86_400,
            daily_days: 30,
            weekly_weeks: 52,
            max_revisions: 0,
        }
    }
}

/// One revision of a file, as the schedule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rev {
    pub rev: i64,
    pub created_ms: i64,
    pub pinned: bool,
}

/// The revisions of one file that the schedule lets go, oldest first.
/// `current` is the file's current revision number.
pub fn expired(revs: &[Rev], current: i64, now_ms: i64, policy: &Policy) -> Vec<i64> {
    let keep_all_ms = i64::try_from(policy.keep_all_secs)
        .unwrap_or(i64::MAX / 4)
        .saturating_mul(1000);
    let daily_end = keep_all_ms.saturating_add(i64::from(policy.daily_days) * DAY_MS);
    let weekly_end = daily_end.saturating_add(i64::from(policy.weekly_weeks) * 7 * DAY_MS);
    let day = |r: &Rev| r.created_ms.div_euclid(DAY_MS);
    let week = |r: &Rev| (day(r) + MONDAY_SHIFT_DAYS).div_euclid(7);
    let last_of_day = newest_per_bucket(revs, day);
    let last_of_week = newest_per_bucket(revs, week);

    let must_keep = |r: &Rev| r.rev == current || r.pinned;
    let mut kept: BTreeSet<(i64, i64)> = BTreeSet::new();
    for r in revs {
        let age = now_ms.saturating_sub(r.created_ms);
        let scheduled = if age < keep_all_ms {
            true
        } else if age < daily_end {
            last_of_day.get(&day(r)) == Some(&r.rev)
        } else if age < weekly_end {
            last_of_week.get(&week(r)) == Some(&r.rev)
        } else {
            false
        };
        if scheduled || must_keep(r) {
            kept.insert((r.created_ms, r.rev));
        }
    }
    // Over the count limit, the oldest that may go, go.
    let limit = policy.max_revisions as usize;
    if limit > 0 {
        let mut excess = kept.len().saturating_sub(limit);
        let removable: Vec<(i64, i64)> = kept
            .iter()
            .filter(|(_, rev)| revs.iter().any(|r| r.rev == *rev && !must_keep(r)))
            .copied()
            .collect();
        for key in removable {
            if excess == 0 {
                break;
            }
            kept.remove(&key);
            excess -= 1;
        }
    }
    let mut gone: Vec<(i64, i64)> = revs
        .iter()
        .filter(|r| !kept.contains(&(r.created_ms, r.rev)))
        .map(|r| (r.created_ms, r.rev))
        .collect();
    gone.sort_unstable();
    gone.into_iter().map(|(_, rev)| rev).collect()
}

/// For each bucket, the revision created last (the higher number on a tie).
fn newest_per_bucket(revs: &[Rev], bucket: impl Fn(&Rev) -> i64) -> HashMap<i64, i64> {
    let mut newest: HashMap<i64, (i64, i64)> = HashMap::new();
    for r in revs {
        let entry = newest.entry(bucket(r)).or_insert((r.created_ms, r.rev));
        if (r.created_ms, r.rev) > *entry {
            *entry = (r.created_ms, r.rev);
        }
    }
    newest.into_iter().map(|(b, (_, rev))| (b, rev)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;
    /// A Wednesday noon, UTC (2026-12-02 12:00).
    const NOW: i64 = 1_796_212_800_000;

    fn rev(rev: i64, ago_ms: i64) -> Rev {
        Rev {
            rev,
            created_ms: NOW - ago_ms,
            pinned: false,
        }
    }

    fn pinned(rev: i64, ago_ms: i64) -> Rev {
        Rev {
            pinned: true,
            ..self::rev(rev, ago_ms)
        }
    }

    #[test]
    fn the_schedule_thins_history_out_by_age() {
        let p = Policy::default();
        // (what the file has, its current revision, what goes)
        let cases: Vec<(&str, Vec<Rev>, i64, Vec<i64>)> = vec![
            (
                "everything from the last day stays",
                vec![rev(1, 23 * HOUR), rev(2, 2 * HOUR), rev(3, 1)],
                3,
                vec![],
            ),
            (
                "of a day in the daily tier only its last stays",
                vec![
                    rev(1, 5 * DAY_MS + 3 * HOUR),
                    rev(2, 5 * DAY_MS + 2 * HOUR),
                    rev(3, 5 * DAY_MS + HOUR),
                    rev(4, HOUR),
                ],
                4,
                vec![1, 2],
            ),
            (
                "each day keeps its own last revision",
                vec![
                    rev(1, 10 * DAY_MS),
                    rev(2, 9 * DAY_MS),
                    rev(3, 8 * DAY_MS),
                    rev(4, 0),
                ],
                4,
                vec![],
            ),
            (
                "of a week in the weekly tier only its last stays",
                // 2026-09-28 (Mon) to 2026-10-02 (Fri), noon each.
                vec![
                    rev(1, 65 * DAY_MS),
                    rev(2, 64 * DAY_MS),
                    rev(3, 61 * DAY_MS),
                    rev(4, 0),
                ],
                4,
                vec![1, 2],
            ),
            (
                "past the weekly tier everything goes",
                vec![rev(1, 500 * DAY_MS), rev(2, 400 * DAY_MS), rev(3, 0)],
                3,
                vec![1, 2],
            ),
            (
                "the current revision stays however old",
                vec![rev(1, 900 * DAY_MS), rev(2, 800 * DAY_MS)],
                2,
                vec![1],
            ),
            (
                "a pinned revision stays however old",
                vec![pinned(1, 900 * DAY_MS), rev(2, 800 * DAY_MS), rev(3, 0)],
                3,
                vec![2],
            ),
        ];
        for (what, revs, current, want) in cases {
            assert_eq!(expired(&revs, current, NOW, &p), want, "{what}");
        }
    }

    #[test]
    fn a_count_limit_takes_the_oldest_that_may_go() {
        let p = Policy {
            max_revisions: 3,
            ..Policy::default()
        };
        let revs = [
            pinned(1, 6 * HOUR),
            rev(2, 5 * HOUR),
            rev(3, 4 * HOUR),
            rev(4, 3 * HOUR),
            rev(5, 2 * HOUR),
        ];
        assert_eq!(expired(&revs, 5, NOW, &p), vec![2, 3]);
        // Pinned and current alone may exceed the limit.
        let all_kept = [
            pinned(1, 3 * HOUR),
            pinned(2, 2 * HOUR),
            pinned(3, HOUR),
            rev(4, 0),
        ];
        assert_eq!(expired(&all_kept, 4, NOW, &p), Vec::<i64>::new());
    }

    #[test]
    fn tiers_can_be_switched_off() {
        let p = Policy {
            keep_all_secs: 3600,
            daily_days: 0,
            weekly_weeks: 0,
            max_revisions: 0,
        };
        let revs = [
            rev(1, 2 * HOUR),
            rev(2, HOUR + 1),
            rev(3, HOUR - 1),
            rev(4, 0),
        ];
        assert_eq!(expired(&revs, 4, NOW, &p), vec![1, 2]);
    }

    #[test]
    fn weeks_start_on_monday() {
        // Sunday 2026-11-29, Monday 2026-11-30 and today, Wednesday, all in
        // the weekly tier: Sunday is the last of its week and stays, Monday
        // shares today's week and goes (with Sunday-based weeks, both would).
        let p = Policy {
            keep_all_secs: 0,
            daily_days: 0,
            weekly_weeks: 4,
            max_revisions: 0,
        };
        let revs = [rev(1, 3 * DAY_MS), rev(2, 2 * DAY_MS), rev(3, 0)];
        assert_eq!(expired(&revs, 3, NOW, &p), vec![2]);
        let sunday = NOW - 3 * DAY_MS;
        let monday = NOW - 2 * DAY_MS;
        let week = |ms: i64| (ms.div_euclid(DAY_MS) + MONDAY_SHIFT_DAYS).div_euclid(7);
        assert_ne!(week(sunday), week(monday));
    }
}
