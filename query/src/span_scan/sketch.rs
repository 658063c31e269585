//! A mergeable, weighted log-linear histogram of durations ("sketch"), used for every
//! percentile the graph and latency reports give.
//!
//! ```text
//!  duration ns ──bucket_of──> bucket index ──+= sample_weight──> counts[index - offset]
//!                                                                      │ merge: add counts
//!  quantile(q): walk counts until the cumulative weight reaches q · total ─> representative
//! ```
//!
//! **Buckets.** Values below 128 ns have one bucket each. Above, every power of two
//! `[2^e, 2^(e+1))` is cut into 64 equal sub-buckets (the top 6 bits after the leading one),
//! so a bucket `[lower, lower + width)` always has `width <= lower / 64`. A quantile is
//! reported as the middle of its bucket, clamped to the exact minimum and maximum, so
//! **its relative error is at most 1/128 (0.78 %)** of the true value. Computing the
//! bucket is a leading-zero count and two shifts, no logarithm, which keeps the latency scan
//! fast (this is the HDR-histogram layout with 6 significant bits).
//!
//! **Quantile definition** (the one the error bound is stated against): the weighted
//! nearest-rank quantile, i.e. the smallest recorded value `v` such that the total weight
//! of values `<= v` is at least `q · total weight`.
//!
//! **Size.** Only the bucket range between the smallest and largest value is stored
//! (durations of one operation usually span a few powers of two: ~1 KB). 3712 buckets
//! cover every non-negative `i64`. Negative durations (clock-skewed clients) count as 0.
//!
//! **Mergeable and subtractable.** Counts add, so per-partition sketches merge exactly,
//! and a value can be taken out again ([`LogSketch::remove`]) — the graph uses that when a
//! call it first counted as going to an uninstrumented peer turns out to have a server span
//! in another file.

/// Bits of the value kept after the leading one: 64 sub-buckets per power of two.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Number of buckets covering `0..=i64::MAX`.
pub const NUM_BUCKETS: usize = 3712;
/// Bound on the relative error of [`LogSketch::quantile`] (see the module docs).
pub const RELATIVE_ERROR: f64 = 1.0 / 128.0;

/// The bucket holding `value` (negative values count as 0).
#[inline]
pub fn bucket_of(value: i64) -> usize {
    let v = value.max(0) as u64;
    if v < 2 * SUB {
        return v as usize;
    }
    // floor(log2 v) >= 7 here, so `shift >= 1`.
    let shift = 63 - v.leading_zeros() - SUB_BITS;
    let sub = (v >> shift) - SUB;
    (SUB + u64::from(shift) * SUB + sub) as usize
}

/// `(lower, width)` of a bucket: it holds the values `lower..lower + width`.
#[inline]
pub fn bucket_bounds(index: usize) -> (i64, i64) {
    let index = index as u64;
    if index < 2 * SUB {
        return (index as i64, 1);
    }
    let shift = (index - SUB) / SUB;
    let sub = (index - SUB) % SUB;
    (((SUB + sub) << shift) as i64, 1i64 << shift)
}

/// The value a bucket reports: its middle (exact for width-1 buckets).
#[inline]
fn representative(index: usize) -> i64 {
    let (lower, width) = bucket_bounds(index);
    lower + (width - 1) / 2
}

/// See the module docs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogSketch {
    /// Bucket index of `counts[0]`.
    offset: usize,
    counts: Vec<f64>,
    total: f64,
    /// Exact extremes of what was added (not lowered by `remove`).
    min: i64,
    max: i64,
}

impl LogSketch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Total weight recorded.
    pub fn total(&self) -> f64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total <= 0.0
    }

    /// Exact largest value added, `None` when empty.
    pub fn max(&self) -> Option<i64> {
        (!self.is_empty()).then_some(self.max)
    }

    /// Exact smallest value added, `None` when empty.
    pub fn min(&self) -> Option<i64> {
        (!self.is_empty()).then_some(self.min)
    }

    /// Records `value` with weight `weight` (a span's `sample_weight`). Non-positive or
    /// non-finite weights are ignored: they cannot come from the `spans` table.
    #[inline]
    pub fn add(&mut self, value: i64, weight: f64) {
        if !(weight > 0.0 && weight.is_finite()) {
            return;
        }
        let value = value.max(0);
        let index = bucket_of(value);
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.push(0.0);
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        *self.slot(index) += weight;
        self.total += weight;
    }

    /// Takes back a value added earlier with the same weight. The exact min and max stay
    /// as they were (they only bound the clamp of [`LogSketch::quantile`]).
    pub fn remove(&mut self, value: i64, weight: f64) {
        if !(weight > 0.0 && weight.is_finite()) || self.counts.is_empty() {
            return;
        }
        let index = bucket_of(value);
        if index < self.offset || index >= self.offset + self.counts.len() {
            debug_assert!(false, "removing a value that was never added");
            return;
        }
        let slot = &mut self.counts[index - self.offset];
        *slot = (*slot - weight).max(0.0);
        self.total = (self.total - weight).max(0.0);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &LogSketch) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            *self = other.clone();
            return;
        }
        self.slot(other.offset);
        self.slot(other.offset + other.counts.len() - 1);
        let start = other.offset - self.offset;
        for (mine, theirs) in self.counts[start..].iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The weighted nearest-rank `q`-quantile (`0 <= q <= 1`), within [`RELATIVE_ERROR`];
    /// `None` when empty. `q = 1` is the exact maximum.
    pub fn quantile(&self, q: f64) -> Option<i64> {
        if self.is_empty() {
            return None;
        }
        if q >= 1.0 {
            return Some(self.max);
        }
        let target = q.max(0.0) * self.total;
        let mut cumulative = 0.0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count;
            if *count > 0.0 && cumulative >= target {
                return Some(representative(self.offset + i).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// Weight per power of two: `(lower, upper, weight)` for the non-empty ranges
    /// `[lower, upper)`, ascending; `[0, 1)` holds the zero durations.
    pub fn octaves(&self) -> Vec<(i64, i64, f64)> {
        let mut out: Vec<(i64, i64, f64)> = Vec::new();
        for (i, count) in self.counts.iter().enumerate() {
            if *count <= 0.0 {
                continue;
            }
            let (lower, upper) = octave_of(bucket_bounds(self.offset + i).0);
            match out.last_mut() {
                Some(last) if last.0 == lower => last.2 += count,
                _ => out.push((lower, upper, *count)),
            }
        }
        out
    }

    /// The count slot of bucket `index`, growing the stored range to include it.
    fn slot(&mut self, index: usize) -> &mut f64 {
        if index < self.offset {
            let grow = self.offset - index;
            self.counts.splice(0..0, std::iter::repeat_n(0.0, grow));
            self.offset = index;
        } else if index >= self.offset + self.counts.len() {
            self.counts.resize(index - self.offset + 1, 0.0);
        }
        &mut self.counts[index - self.offset]
    }
}

/// The power-of-two range `[lower, upper)` holding `value` (`[0, 1)` for zero).
pub fn octave_of(value: i64) -> (i64, i64) {
    if value <= 0 {
        return (0, 1);
    }
    let e = 63 - (value as u64).leading_zeros();
    let lower = 1i64 << e;
    (lower, lower.saturating_mul(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition the sketch is measured against: weighted nearest rank.
    fn exact_quantile(values: &[(i64, f64)], q: f64) -> i64 {
        let mut sorted = values.to_vec();
        sorted.sort_by_key(|(v, _)| *v);
        let total: f64 = sorted.iter().map(|(_, w)| w).sum();
        let target = q * total;
        let mut cumulative = 0.0;
        for (v, w) in &sorted {
            cumulative += w;
            if cumulative >= target {
                return *v;
            }
        }
        sorted.last().unwrap().0
    }

    #[test]
    fn buckets_tile_the_whole_range() {
        // Every bucket starts where the previous one ended, up to i64::MAX.
        let mut next = 0i64;
        for index in 0..NUM_BUCKETS {
            let (lower, width) = bucket_bounds(index);
            assert_eq!(lower, next, "bucket {index}");
            assert_eq!(bucket_of(lower), index);
            assert_eq!(bucket_of(lower + (width - 1)), index);
            assert!(width == 1 || (width as f64) <= lower as f64 / 64.0);
            next = lower.wrapping_add(width);
        }
        assert_eq!(next, i64::MIN, "the last bucket ends at i64::MAX");
        assert_eq!(bucket_of(i64::MAX), NUM_BUCKETS - 1);
        assert_eq!(bucket_of(-5), 0);
    }

    #[test]
    fn representative_is_within_the_stated_error() {
        for v in [
            1i64,
            127,
            128,
            129,
            1000,
            65_535,
            1 << 40,
            (1 << 40) + 12_345,
            i64::MAX,
        ] {
            let r = representative(bucket_of(v));
            let error = (r - v).abs() as f64 / v as f64;
            assert!(error <= RELATIVE_ERROR, "{v} -> {r}: {error}");
        }
    }

    #[test]
    fn weighted_quantiles_match_exact_ones_within_the_bound() {
        // A deterministic spread over six orders of magnitude with weights 1, 2 and 4.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut values = Vec::new();
        let mut sketch = LogSketch::new();
        for i in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = 1_000 + (state % 1_000_000_000) as i64 / (1 + (i % 1000) as i64);
            let w = [1.0, 2.0, 4.0][i % 3];
            values.push((v, w));
            sketch.add(v, w);
        }
        for q in [0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let exact = exact_quantile(&values, q);
            let estimate = sketch.quantile(q).unwrap();
            let error = (estimate - exact).abs() as f64 / exact as f64;
            assert!(error <= RELATIVE_ERROR, "q={q}: {estimate} vs {exact}");
        }
        assert_eq!(sketch.max(), values.iter().map(|(v, _)| *v).max());
        assert_eq!(sketch.quantile(1.0), sketch.max());
        assert_eq!(sketch.total(), values.iter().map(|(_, w)| w).sum::<f64>());
    }

    #[test]
    fn merge_equals_adding_everything_to_one_sketch() {
        let mut a = LogSketch::new();
        let mut b = LogSketch::new();
        let mut all = LogSketch::new();
        for v in [5i64, 300, 9_000_000, 12] {
            a.add(v, 1.0);
            all.add(v, 1.0);
        }
        for v in [1i64 << 50, 2, 77_777] {
            b.add(v, 3.0);
            all.add(v, 3.0);
        }
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged, all);
        let mut other_order = b;
        other_order.merge(&a);
        assert_eq!(other_order.quantile(0.5), all.quantile(0.5));
        assert_eq!(other_order.total(), all.total());
    }

    #[test]
    fn remove_takes_a_value_back() {
        let mut s = LogSketch::new();
        s.add(1_000, 1.0);
        s.add(50_000, 2.0);
        s.remove(50_000, 2.0);
        assert_eq!(s.total(), 1.0);
        // The exact max still bounds the clamp, so the answer is the bucket's middle.
        let p99 = s.quantile(0.99).unwrap();
        assert!(
            (p99 - 1_000).abs() as f64 <= 1_000.0 * RELATIVE_ERROR,
            "{p99}"
        );
        s.remove(1_000, 1.0);
        assert!(s.is_empty());
        assert_eq!(s.quantile(0.5), None);
    }

    #[test]
    fn octaves_group_by_power_of_two() {
        let mut s = LogSketch::new();
        for v in [0i64, 3, 3, 1000, 1023, 1024] {
            s.add(v, 1.0);
        }
        assert_eq!(
            s.octaves(),
            vec![
                (0, 1, 1.0),
                (2, 4, 2.0),
                (512, 1024, 2.0),
                (1024, 2048, 1.0)
            ]
        );
        assert_eq!(octave_of(i64::MAX), (1 << 62, i64::MAX));
    }
}
