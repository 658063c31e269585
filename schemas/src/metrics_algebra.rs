//! The arithmetic of metric points, in one place: counter increases across resets,
//! histogram merges and increases (by upper bound, for queries), bucket-count arithmetic on
//! a fixed layout, and exponential-histogram rescaling. The collector's metrics limits
//! (delta conversion, aggregation), range queries and rollups all use these, so a reset or
//! a histogram merge means the same thing at ingest and at query time.
//!
//! ```text
//!  cumulative counter  v0 ── v1 ── v2 (< v1: reset) ── v3
//!     counter_increase:     v1-v0    v2 (from zero)      v3-v2      (new start_time: reset)
//!  cumulative histogram   per bucket the same; any bucket going down is a reset
//!  Histogram (bound, count) buckets ── merge: add counts of equal bounds
//!                                   └─ quantile: Prometheus' histogram_quantile
//!  ExpBuckets (offset, counts) at scale s ── downscale(by): index >> by (OTLP rule)
//!                                        └─ add / increase at one scale
//! ```

use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;

/// Whether a cumulative series restarted between two points: both have a start time and
/// it changed.
pub fn restarted(prev_start: Option<i64>, start: Option<i64>) -> bool {
    prev_start.is_some() && start.is_some() && prev_start != start
}

/// The increase of a cumulative counter from its previous point `(prev_start, prev_value)`
/// to `(start, value)`. A value below the previous one, or a new start time, is a reset:
/// the counter restarted from zero, so the whole value is the increase.
pub fn counter_increase(
    prev_start: Option<i64>,
    prev_value: f64,
    start: Option<i64>,
    value: f64,
) -> f64 {
    if restarted(prev_start, start) || value < prev_value {
        value
    } else {
        value - prev_value
    }
}

/// The bucket-count increase of a cumulative histogram since its previous point; after a
/// restart or a reset (a count went down) the whole histogram.
pub fn histogram_increase(
    prev_start: Option<i64>,
    prev: &Histogram,
    start: Option<i64>,
    hist: Histogram,
) -> Histogram {
    if restarted(prev_start, start) {
        hist
    } else {
        hist.increase_since(prev).unwrap_or(hist)
    }
}

/// Adds `other`'s bucket counts to `acc` (same layout), saturating.
pub fn add_bucket_counts(acc: &mut [u64], other: &[u64]) {
    for (a, b) in acc.iter_mut().zip(other) {
        *a = a.saturating_add(*b);
    }
}

/// `current - prev` bucket by bucket (same layout); `None` when a bucket went down or the
/// layouts differ in length (a reset).
pub fn bucket_counts_increase(current: &[u64], prev: &[u64]) -> Option<Vec<u64>> {
    if current.len() != prev.len() {
        return None;
    }
    current
        .iter()
        .zip(prev)
        .map(|(a, b)| a.checked_sub(*b))
        .collect()
}

/// A histogram as (upper bound, count) buckets sorted by bound; the last may be +Inf. The
/// form queries merge histograms of any layout in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub count: f64,
}

impl Histogram {
    /// Explicit bounds `b`, counts `c` (`c.len() == b.len() + 1`; the last is +Inf).
    pub fn explicit(bounds: &[f64], counts: &[u64]) -> Self {
        let buckets = counts
            .iter()
            .enumerate()
            .map(|(i, c)| (bounds.get(i).copied().unwrap_or(f64::INFINITY), *c as f64))
            .collect::<Vec<_>>();
        Self::from_buckets(buckets)
    }

    /// An exponential histogram: bucket `i` of scale `s` covers `(base^i, base^(i+1)]`
    /// with `base = 2^(2^-s)`; negative buckets mirror it; the zero bucket ends at the
    /// zero threshold.
    pub fn exponential(
        scale: i32,
        zero_count: u64,
        zero_threshold: f64,
        positive: Option<(i32, &[u64])>,
        negative: Option<(i32, &[u64])>,
    ) -> Self {
        let factor = (-f64::from(scale)).exp2();
        let bound = |index: i64| (index as f64 * factor).exp2();
        let mut buckets = vec![(zero_threshold, zero_count as f64)];
        if let Some((offset, counts)) = positive {
            for (j, c) in counts.iter().enumerate() {
                buckets.push((bound(i64::from(offset) + j as i64 + 1), *c as f64));
            }
        }
        if let Some((offset, counts)) = negative {
            for (j, c) in counts.iter().enumerate() {
                buckets.push((-bound(i64::from(offset) + j as i64), *c as f64));
            }
        }
        Self::from_buckets(buckets)
    }

    /// From (upper bound, count) buckets in any order.
    pub fn from_buckets(mut buckets: Vec<(f64, f64)>) -> Self {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let count = buckets.iter().map(|b| b.1).sum();
        Self { buckets, count }
    }

    /// Adds `other`'s counts bucket by bucket (matched by upper bound).
    pub fn merge(&mut self, other: &Histogram) {
        let mut merged: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for (bound, count) in self.buckets.iter().chain(&other.buckets) {
            merged.entry(bound.to_bits()).or_insert((*bound, 0.0)).1 += count;
        }
        *self = Self::from_buckets(merged.into_values().collect());
    }

    /// The increase from `prev` to `self` (both cumulative), or `None` after a reset
    /// (fewer observations, or a bucket that went down: new layout or restarted series).
    pub fn increase_since(&self, prev: &Histogram) -> Option<Histogram> {
        if self.count < prev.count {
            return None;
        }
        let before: HashMap<u64, f64> = prev
            .buckets
            .iter()
            .map(|(b, c)| (b.to_bits(), *c))
            .collect();
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (bound, count) in &self.buckets {
            let delta = count - before.get(&bound.to_bits()).copied().unwrap_or(0.0);
            if delta < 0.0 {
                return None;
            }
            buckets.push((*bound, delta));
        }
        Some(Self::from_buckets(buckets))
    }

    /// Prometheus' `histogram_quantile`: linear interpolation inside the bucket holding the
    /// rank; the +Inf bucket answers the largest finite bound. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: f64 = self.buckets.iter().map(|b| b.1).sum();
        if total <= 0.0 || self.buckets.is_empty() {
            return None;
        }
        let rank = q * total;
        let mut cumulative = 0.0;
        for (i, (upper, count)) in self.buckets.iter().enumerate() {
            let below = cumulative;
            cumulative += count;
            if cumulative < rank || *count == 0.0 && cumulative < total {
                continue;
            }
            if upper.is_infinite() {
                return if i == 0 {
                    None
                } else {
                    Some(self.buckets[i - 1].0)
                };
            }
            if i == 0 && *upper <= 0.0 {
                return Some(*upper);
            }
            let lower = if i == 0 { 0.0 } else { self.buckets[i - 1].0 };
            return Some(lower + (upper - lower) * ((rank - below) / count));
        }
        self.buckets.last().map(|b| b.0)
    }
}

/// Index `idx` at a scale `by` steps coarser (floor division by 2^by, as the OTLP spec
/// says).
pub fn shift(idx: i64, by: u32) -> i64 {
    if by >= 63 {
        if idx < 0 { -1 } else { 0 }
    } else {
        idx >> by
    }
}

/// How many steps coarser `to` is than `from` (0 when it is not coarser).
pub fn scale_diff(from: i32, to: i32) -> u32 {
    u32::try_from(i64::from(from) - i64::from(to)).unwrap_or(0)
}

/// One sign's buckets of an exponential histogram; `offset` is the first bucket's index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExpBuckets {
    pub offset: i64,
    pub counts: Vec<u64>,
}

impl ExpBuckets {
    pub fn from_proto(b: Option<&Buckets>) -> Self {
        b.map_or_else(Self::default, |b| Self {
            offset: i64::from(b.offset),
            counts: b.bucket_counts.clone(),
        })
    }

    pub fn to_proto(&self) -> Buckets {
        Buckets {
            offset: i32::try_from(self.offset).unwrap_or(if self.offset < 0 {
                i32::MIN
            } else {
                i32::MAX
            }),
            bucket_counts: self.counts.clone(),
        }
    }

    fn last(&self) -> i64 {
        self.offset + self.counts.len() as i64 - 1
    }

    /// The same counts at a scale `by` steps coarser: each bucket lands in bucket
    /// `index >> by`.
    pub fn downscale(&self, by: u32) -> Self {
        if by == 0 || self.counts.is_empty() {
            return Self {
                offset: shift(self.offset, by),
                counts: self.counts.clone(),
            };
        }
        let lo = shift(self.offset, by);
        let mut counts = vec![0u64; (shift(self.last(), by) - lo + 1) as usize];
        for (i, c) in self.counts.iter().enumerate() {
            let j = (shift(self.offset + i as i64, by) - lo) as usize;
            counts[j] = counts[j].saturating_add(*c);
        }
        Self { offset: lo, counts }
    }

    /// Buckets the union of these (each downscaled) would span.
    pub fn span(parts: &[(&ExpBuckets, u32)]) -> u64 {
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for (b, by) in parts {
            if !b.counts.is_empty() {
                lo = lo.min(shift(b.offset, *by));
                hi = hi.max(shift(b.last(), *by));
            }
        }
        if lo > hi { 0 } else { (hi - lo + 1) as u64 }
    }

    /// Adds `o`'s counts (same scale); the caller keeps the span bounded.
    pub fn add(&mut self, o: &ExpBuckets) {
        if o.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            *self = o.clone();
            return;
        }
        let lo = self.offset.min(o.offset);
        let hi = self.last().max(o.last());
        let mut counts = vec![0u64; (hi - lo + 1) as usize];
        for src in [&*self, o] {
            for (i, c) in src.counts.iter().enumerate() {
                let j = (src.offset + i as i64 - lo) as usize;
                counts[j] = counts[j].saturating_add(*c);
            }
        }
        self.offset = lo;
        self.counts = counts;
    }

    /// `self - prev` (same scale); `None` when a bucket went down or disappeared (a reset).
    pub fn increase(&self, prev: &ExpBuckets) -> Option<ExpBuckets> {
        let mut out = self.clone();
        for (i, c) in prev.counts.iter().enumerate() {
            if *c == 0 {
                continue;
            }
            let j = prev.offset + i as i64 - self.offset;
            let slot = usize::try_from(j)
                .ok()
                .and_then(|j| out.counts.get_mut(j))?;
            *slot = slot.checked_sub(*c)?;
        }
        Some(out)
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, c| a.saturating_add(*c))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn counters_count_resets_from_zero() {
        assert_eq!(counter_increase(Some(1), 10.0, Some(1), 25.0), 15.0);
        // A drop is a reset: the counter restarted at zero and reached 5.
        assert_eq!(counter_increase(Some(1), 25.0, Some(1), 5.0), 5.0);
        // A new start time is a reset even when the value grew.
        assert_eq!(counter_increase(Some(1), 5.0, Some(2), 30.0), 30.0);
        // Unknown start times only compare values.
        assert_eq!(counter_increase(None, 5.0, Some(2), 30.0), 25.0);
    }

    #[test]
    fn histograms_merge_by_bound_and_reset_on_a_drop() {
        let a = Histogram::explicit(&[1.0, 5.0], &[1, 2, 3]);
        let mut merged = a.clone();
        merged.merge(&Histogram::explicit(&[5.0], &[4, 1]));
        assert_eq!(
            merged.buckets,
            vec![(1.0, 1.0), (5.0, 6.0), (f64::INFINITY, 4.0)]
        );
        assert_eq!(merged.count, 11.0);
        let later = Histogram::explicit(&[1.0, 5.0], &[2, 2, 5]);
        assert_eq!(
            later.increase_since(&a).unwrap().buckets,
            vec![(1.0, 1.0), (5.0, 0.0), (f64::INFINITY, 2.0)]
        );
        let reset = Histogram::explicit(&[1.0, 5.0], &[0, 9, 9]);
        assert_eq!(reset.increase_since(&a), None);
        assert_eq!(histogram_increase(None, &a, None, reset.clone()), reset);
        assert_eq!(
            Histogram::explicit(&[1.0, 5.0], &[0, 10, 0]).quantile(0.5),
            Some(3.0)
        );
    }

    #[test]
    fn bucket_counts_subtract_only_on_one_layout() {
        assert_eq!(bucket_counts_increase(&[5, 7], &[2, 7]), Some(vec![3, 0]));
        assert_eq!(bucket_counts_increase(&[5, 7], &[6, 7]), None);
        assert_eq!(bucket_counts_increase(&[5, 7], &[5]), None);
        let mut acc = vec![1, u64::MAX];
        add_bucket_counts(&mut acc, &[2, 1]);
        assert_eq!(acc, vec![3, u64::MAX]);
    }

    #[test]
    fn exponential_buckets_downscale_by_floor_division() {
        let b = ExpBuckets {
            offset: -3,
            counts: vec![1, 2, 3, 4, 5],
        };
        // Indexes -3..=1 at one scale coarser: -2, -1, -1, 0, 0.
        assert_eq!(
            b.downscale(1),
            ExpBuckets {
                offset: -2,
                counts: vec![1, 5, 9]
            }
        );
        assert_eq!(shift(-1, 70), -1);
        assert_eq!(scale_diff(3, 1), 2);
        assert_eq!(scale_diff(1, 3), 0);
    }

    fn exp_buckets() -> impl Strategy<Value = ExpBuckets> {
        (-50i64..50, proptest::collection::vec(0u64..1_000, 0..20))
            .prop_map(|(offset, counts)| ExpBuckets { offset, counts })
    }

    proptest! {
        /// Rescaling keeps every observation, and merging then rescaling equals rescaling
        /// then merging.
        #[test]
        fn rescaling_keeps_counts_and_commutes_with_merge(
            a in exp_buckets(),
            b in exp_buckets(),
            by in 0u32..8,
        ) {
            prop_assert_eq!(a.downscale(by).total(), a.total());
            let mut merged = a.clone();
            merged.add(&b);
            let mut rescaled = a.downscale(by);
            rescaled.add(&b.downscale(by));
            // Equal bucket by bucket once both drop their leading and trailing zeros.
            let trim = |x: ExpBuckets| {
                let first = x.counts.iter().position(|c| *c > 0);
                let last = x.counts.iter().rposition(|c| *c > 0);
                match (first, last) {
                    (Some(f), Some(l)) => (x.offset + f as i64, x.counts[f..=l].to_vec()),
                    _ => (0, Vec::new()),
                }
            };
            prop_assert_eq!(trim(merged.downscale(by)), trim(rescaled));
        }

        /// The increase of a histogram plus what it grew by is the later histogram.
        #[test]
        fn increase_undoes_merge(a in exp_buckets(), b in exp_buckets()) {
            let mut later = a.clone();
            later.add(&b);
            let grown = later.increase(&a).expect("only grew");
            prop_assert_eq!(grown.total(), b.total());
        }

        #[test]
        fn counter_increases_are_never_negative(
            prev in 0.0f64..1e12,
            value in 0.0f64..1e12,
            restart in any::<bool>(),
        ) {
            let start = Some(if restart { 2 } else { 1 });
            let inc = counter_increase(Some(1), prev, start, value);
            prop_assert!(inc >= 0.0);
            prop_assert!(inc <= value);
        }

        /// Merging explicit histograms adds their counts, in any order.
        #[test]
        fn histogram_merge_adds_counts(
            a in proptest::collection::vec(0u64..1_000, 3),
            b in proptest::collection::vec(0u64..1_000, 3),
        ) {
            let bounds = [1.0, 2.0];
            let mut ab = Histogram::explicit(&bounds, &a);
            ab.merge(&Histogram::explicit(&bounds, &b));
            let mut ba = Histogram::explicit(&bounds, &b);
            ba.merge(&Histogram::explicit(&bounds, &a));
            prop_assert_eq!(&ab, &ba);
            prop_assert_eq!(ab.count, (a.iter().sum::<u64>() + b.iter().sum::<u64>()) as f64);
            prop_assert_eq!(
                ab.increase_since(&Histogram::explicit(&bounds, &a)),
                Some(Histogram::explicit(&bounds, &b))
            );
        }
    }
}
