//! Which source a range query reads for which part of its window.
//!
//! ```text
//!  window [start - lookback, end), step buckets [start + k*step, start + (k+1)*step)
//!  per hour with a rollup (others: raw):
//!    1h rollup  if the hour lies in the window and in one step bucket
//!    else per minute: 1m rollup if the minute does, else raw (clipped to the window)
//!  ─> disjoint, sorted intervals per source (adjacent ones joined)
//! ```
//!
//! A rollup bucket inside one step bucket contributes exactly what its points would, so
//! the answer does not depend on the choice; the coarsest source that fits is taken.

use std::collections::BTreeSet;

use super::store::RollupFile;
use super::{HOUR_NS, MINUTE_NS, Resolution, files_of};
use crate::{Error, QueryService, Result};

/// `[start, end)` in ns since 1970.
pub(super) type Interval = (i64, i64);

/// The rollup part of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupSource {
    pub resolution: Resolution,
    pub intervals: Vec<Interval>,
    /// The files of the hours the intervals touch.
    pub files: Vec<RollupFile>,
}

/// Where a range query reads what.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcePlan {
    /// Raw points, sorted disjoint intervals.
    pub raw: Vec<Interval>,
    /// Coarsest first; only resolutions with intervals.
    pub rollups: Vec<RollupSource>,
}

impl SourcePlan {
    /// Raw points for the whole window.
    pub fn raw_only(window: Interval) -> Self {
        Self {
            raw: if window.0 < window.1 {
                vec![window]
            } else {
                Vec::new()
            },
            rollups: Vec::new(),
        }
    }

    /// The sources read, coarsest first (`1h`, `1m`, `raw`).
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> =
            self.rollups.iter().map(|r| r.resolution.name()).collect();
        if !self.raw.is_empty() {
            names.push("raw");
        }
        names
    }
}

/// Adds `[a, b)` to sorted `list`, joining it with the last interval when adjacent.
fn push(list: &mut Vec<Interval>, a: i64, b: i64) {
    if a >= b {
        return;
    }
    match list.last_mut() {
        Some(last) if last.1 == a => last.1 = b,
        _ => list.push((a, b)),
    }
}

/// The intervals per source: (raw, 1m, 1h). `hours_1h` / `hours_1m`: hours (since 1970)
/// that have that rollup.
pub(crate) fn choose(
    window: Interval,
    start: i64,
    step: i64,
    hours_1h: &BTreeSet<i64>,
    hours_1m: &BTreeSet<i64>,
) -> (Vec<Interval>, Vec<Interval>, Vec<Interval>) {
    let (from, end) = window;
    let (mut raw, mut m1, mut h1) = (Vec::new(), Vec::new(), Vec::new());
    if from >= end || step <= 0 {
        return (raw, m1, h1);
    }
    let bucket = |t: i64| (i128::from(t) - i128::from(start)).div_euclid(i128::from(step));
    // [b, b + width) inside the window and inside one step bucket.
    let fits = |b: i64, width: i64| {
        b >= from
            && b.checked_add(width).is_some_and(|e| e <= end)
            && bucket(b) == bucket(b + width - 1)
    };
    let hours: BTreeSet<i64> = hours_1h.union(hours_1m).copied().collect();
    let (first_hour, last_hour) = (from.div_euclid(HOUR_NS), (end - 1).div_euclid(HOUR_NS));
    let mut cursor = from;
    for &hour in hours.range(first_hour..=last_hour) {
        let hour_start = hour * HOUR_NS;
        let (lo, hi) = (hour_start.max(from), (hour_start + HOUR_NS).min(end));
        push(&mut raw, cursor, lo);
        if hours_1h.contains(&hour) && fits(hour_start, HOUR_NS) {
            push(&mut h1, hour_start, hour_start + HOUR_NS);
        } else if hours_1m.contains(&hour) {
            for m in 0..60 {
                let minute = hour_start + m * MINUTE_NS;
                if fits(minute, MINUTE_NS) {
                    push(&mut m1, minute, minute + MINUTE_NS);
                } else {
                    push(&mut raw, minute.max(lo), (minute + MINUTE_NS).min(hi));
                }
            }
        } else {
            push(&mut raw, lo, hi);
        }
        cursor = hi;
    }
    push(&mut raw, cursor, end);
    (raw, m1, h1)
}

/// Hours touched by sorted `intervals`.
fn hours_touched(intervals: &[Interval]) -> BTreeSet<i64> {
    let mut hours = BTreeSet::new();
    for &(a, b) in intervals {
        hours.extend(a.div_euclid(HOUR_NS)..=(b - 1).div_euclid(HOUR_NS));
    }
    hours
}

/// The plan of a range query over `window` with step buckets from `start` (see the
/// module docs); raw only when rollups are disabled.
pub(crate) async fn plan_sources(
    service: &QueryService,
    window: Interval,
    start: i64,
    step: i64,
) -> Result<SourcePlan> {
    // A rollup bucket fits in a step bucket only if the step is at least a minute.
    if !service.config().rollups.enabled || window.0 >= window.1 || step < MINUTE_NS {
        return Ok(SourcePlan::raw_only(window));
    }
    let files = files_of(service);
    let hours = (
        window.0.div_euclid(HOUR_NS),
        (window.1 - 1).div_euclid(HOUR_NS),
    );
    let listed = tokio::task::spawn_blocking(move || {
        Resolution::ALL.map(|res| (res, files.list(res, Some(hours))))
    })
    .await
    .map_err(|e| Error::Execution(format!("listing rollups: {e}")))?;
    let set = |res: Resolution| -> BTreeSet<i64> {
        listed
            .iter()
            .filter(|(r, _)| *r == res)
            .flat_map(|(_, files)| files.iter().map(|f| f.hour))
            .collect()
    };
    // An hour is rolled up when both files are there (a crash may leave one).
    let complete: BTreeSet<i64> = set(Resolution::Hour)
        .intersection(&set(Resolution::Minute))
        .copied()
        .collect();
    let (raw, m1, h1) = choose(window, start, step, &complete, &complete);
    let mut rollups = Vec::new();
    for (resolution, intervals) in [(Resolution::Hour, h1), (Resolution::Minute, m1)] {
        if intervals.is_empty() {
            continue;
        }
        let used = hours_touched(&intervals);
        let files = listed
            .iter()
            .filter(|(r, _)| *r == resolution)
            .flat_map(|(_, files)| files.iter())
            .filter(|f| used.contains(&f.hour))
            .cloned()
            .collect();
        rollups.push(RollupSource {
            resolution,
            intervals,
            files,
        });
    }
    Ok(SourcePlan { raw, rollups })
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = MINUTE_NS;
    const H: i64 = HOUR_NS;

    #[test]
    fn whole_hours_use_the_hour_rollup_the_rest_raw() {
        let all: BTreeSet<i64> = (0..10).collect();
        // Step 1h from 2h, window [2h, 12h): hours 2..=9 rolled up, 10 and 11 raw.
        let (raw, m1, h1) = choose((2 * H, 12 * H), 2 * H, H, &all, &all);
        assert_eq!(h1, vec![(2 * H, 10 * H)]);
        assert!(m1.is_empty());
        assert_eq!(raw, vec![(10 * H, 12 * H)]);
        // With a lookback step the window starts one hour earlier.
        let (raw, _, h1) = choose((H, 5 * H), 2 * H, H, &all, &all);
        assert_eq!((raw, h1), (vec![], vec![(H, 5 * H)]));
    }

    #[test]
    fn misaligned_steps_fall_back_to_minutes_then_raw() {
        let all: BTreeSet<i64> = (0..10).collect();
        // Step 1h starting at 2h30m30s: no hour fits; every minute but the one holding a
        // step boundary (…:30:30) does.
        let start = 2 * H + 30 * M + 30_000_000_000;
        let (raw, m1, h1) = choose((start, start + 2 * H), start, H, &all, &all);
        assert!(h1.is_empty());
        assert_eq!(
            raw,
            vec![
                (start, 2 * H + 31 * M),
                (3 * H + 30 * M, 3 * H + 31 * M),
                (4 * H + 30 * M, start + 2 * H),
            ]
        );
        assert_eq!(
            m1,
            vec![
                (2 * H + 31 * M, 3 * H + 30 * M),
                (3 * H + 31 * M, 4 * H + 30 * M)
            ]
        );
        // A step below a minute: raw only.
        let (raw, m1, h1) = choose((0, 2 * H), 0, 30_000_000_000, &all, &all);
        assert_eq!((raw, m1, h1), (vec![(0, 2 * H)], vec![], vec![]));
    }

    #[test]
    fn hours_without_rollups_are_raw() {
        let some: BTreeSet<i64> = [3, 5].into_iter().collect();
        let (raw, m1, h1) = choose((0, 8 * H), 0, 2 * H, &some, &some);
        // Hour 3 lies in step bucket [2h, 4h), hour 5 in [4h, 6h).
        assert_eq!(h1, vec![(3 * H, 4 * H), (5 * H, 6 * H)]);
        assert!(m1.is_empty());
        assert_eq!(raw, vec![(0, 3 * H), (4 * H, 5 * H), (6 * H, 8 * H)]);
    }
}
