//! OpenTelemetry consistent probability sampling: the arithmetic of the `ot` tracestate
//! entry (`th` threshold, `rv` randomness), as in the specification "TraceState:
//! Probability Sampling".
//!
//! Every participant derives the same 56-bit randomness `R` for a trace (from `rv`, else
//! from the last 7 bytes of the trace ID) and keeps it when `R >= T`, `T` being its rejection
//! threshold. Because `R` is shared, samplers with different thresholds make nested
//! decisions: a trace kept at threshold `T1` is kept at every `T2 <= T1`. Sampling at two
//! stages keeps exactly the traces with `R >= max(T1, T2)`, so the combined threshold is the
//! maximum, and the adjusted count (the weight of a kept span) is `2^56 / (2^56 - T)`.
//!
//! Weft writes the threshold that decided a span into its tracestate (`ot=th:…`), and
//! [`crate::spans`] turns it into the `sample_weight` column at conversion time, so every
//! stored span carries its adjusted count.

/// 2^56: thresholds and randomness are 56-bit values.
pub const MAX_ADJUSTED_COUNT: u64 = 1 << 56;
/// 56 bits are 14 hex digits.
const HEX_DIGITS: usize = 14;

/// A rejection threshold: a trace is kept when its randomness is `>=` it.
/// `0` keeps everything; `2^56` (not encodable in tracestate) keeps nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Threshold(u64);

/// The 56-bit randomness of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Randomness(u64);

/// Why a probability cannot be a threshold.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("sampling ratio {0} is outside [2^-56, 1] (use 0 to drop everything)")]
pub struct RatioOutOfRange(pub f64);

impl Threshold {
    /// Keeps every trace (`th:0`).
    pub const ALWAYS: Threshold = Threshold(0);
    /// Keeps no trace.
    pub const NEVER: Threshold = Threshold(MAX_ADJUSTED_COUNT);

    /// The raw 56-bit value (`2^56` for [`Threshold::NEVER`]).
    pub fn value(self) -> u64 {
        self.0
    }

    /// From a raw value; values above `2^56` mean "never".
    pub fn from_value(value: u64) -> Self {
        Threshold(value.min(MAX_ADJUSTED_COUNT))
    }

    /// The threshold that keeps a fraction `ratio` of traces, at full precision:
    /// `T = 2^56 - round(ratio * 2^56)`. `0` gives [`Threshold::NEVER`].
    pub fn from_ratio(ratio: f64) -> Result<Self, RatioOutOfRange> {
        if ratio == 0.0 {
            return Ok(Self::NEVER);
        }
        if !(ratio.is_finite() && (1.0 / MAX_ADJUSTED_COUNT as f64..=1.0).contains(&ratio)) {
            return Err(RatioOutOfRange(ratio));
        }
        let scaled = (ratio * MAX_ADJUSTED_COUNT as f64).round() as u64;
        Ok(Threshold(MAX_ADJUSTED_COUNT - scaled))
    }

    /// Like [`Threshold::from_ratio`], rounded to `precision` significant hex digits
    /// (leading zeros of the threshold do not count), so the tracestate value stays short.
    pub fn from_ratio_with_precision(ratio: f64, precision: u8) -> Result<Self, RatioOutOfRange> {
        let exact = Self::from_ratio(ratio)?;
        if precision == 0 || exact == Self::NEVER || exact == Self::ALWAYS {
            return Ok(exact);
        }
        let mut precision = usize::from(precision);
        let mut reject = 1.0 - ratio;
        while reject * 16.0 < 1.0 && precision < HEX_DIGITS {
            reject *= 16.0;
            precision += 1;
        }
        if precision >= HEX_DIGITS {
            return Ok(exact);
        }
        let shift = 4 * (HEX_DIGITS - precision) as u32;
        let half = 1u64 << (shift - 1);
        let rounded = ((exact.0 + half) >> shift) << shift;
        // Rounding up to 2^56 would drop everything: a non-zero ratio keeps full precision.
        Ok(if rounded >= MAX_ADJUSTED_COUNT {
            exact
        } else {
            Threshold(rounded)
        })
    }

    /// The fraction of traces this threshold keeps.
    pub fn ratio(self) -> f64 {
        (MAX_ADJUSTED_COUNT - self.0) as f64 / MAX_ADJUSTED_COUNT as f64
    }

    /// The adjusted count of a span kept at this threshold: `2^56 / (2^56 - T)`
    /// (0 for [`Threshold::NEVER`], which keeps nothing).
    pub fn adjusted_count(self) -> f64 {
        if self.0 >= MAX_ADJUSTED_COUNT {
            return 0.0;
        }
        MAX_ADJUSTED_COUNT as f64 / (MAX_ADJUSTED_COUNT - self.0) as f64
    }

    /// The decision: keep when `R >= T`.
    pub fn keeps(self, randomness: Randomness) -> bool {
        randomness.0 >= self.0
    }

    /// Parses a `th` value: 1 to 14 hex digits, trailing zeros implied.
    pub fn parse(th: &str) -> Option<Self> {
        if th.is_empty() || th.len() > HEX_DIGITS || !th.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let value = u64::from_str_radix(th, 16).ok()? << (4 * (HEX_DIGITS - th.len()));
        Some(Threshold(value))
    }

    /// The `th` value: 14 hex digits with trailing zeros removed (`"0"` for zero).
    /// `None` for [`Threshold::NEVER`], which tracestate cannot express.
    pub fn encode(self) -> Option<String> {
        if self.0 >= MAX_ADJUSTED_COUNT {
            return None;
        }
        if self.0 == 0 {
            return Some("0".to_owned());
        }
        let full = format!("{:014x}", self.0);
        Some(full.trim_end_matches('0').to_owned())
    }
}

impl Randomness {
    /// From a raw 56-bit value (higher bits are dropped).
    pub fn from_value(value: u64) -> Self {
        Randomness(value & (MAX_ADJUSTED_COUNT - 1))
    }

    pub fn value(self) -> u64 {
        self.0
    }

    /// The last 7 bytes of a 16-byte trace ID, big-endian. `None` for other lengths.
    pub fn from_trace_id(trace_id: &[u8]) -> Option<Self> {
        let id: &[u8; 16] = trace_id.try_into().ok()?;
        let mut bytes = [0u8; 8];
        bytes[1..].copy_from_slice(&id[9..]);
        Some(Randomness(u64::from_be_bytes(bytes)))
    }

    /// Parses an `rv` value: exactly 14 hex digits.
    pub fn parse(rv: &str) -> Option<Self> {
        if rv.len() != HEX_DIGITS || !rv.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(rv, 16).ok().map(Randomness)
    }

    /// The randomness of a span: its tracestate's `rv` when valid, else its trace ID's.
    pub fn of_span(trace_id: &[u8], trace_state: &str) -> Option<Self> {
        OtelTraceState::parse(trace_state)
            .rv
            .or_else(|| Self::from_trace_id(trace_id))
    }
}

/// The sampling fields of a W3C tracestate's `ot` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtelTraceState {
    /// `th`, when present and valid.
    pub th: Option<Threshold>,
    /// `rv`, when present and valid.
    pub rv: Option<Randomness>,
}

impl OtelTraceState {
    /// Reads `th` and `rv` from the `ot` member of `trace_state`; anything malformed is
    /// treated as absent (the specification says to ignore invalid values).
    pub fn parse(trace_state: &str) -> Self {
        let mut out = Self::default();
        let Some(ot) = ot_member(trace_state) else {
            return out;
        };
        for field in ot.split(';') {
            if let Some(th) = field.strip_prefix("th:") {
                out.th = Threshold::parse(th);
            } else if let Some(rv) = field.strip_prefix("rv:") {
                out.rv = Randomness::parse(rv);
            }
        }
        out
    }
}

fn ot_member(trace_state: &str) -> Option<&str> {
    trace_state
        .split(',')
        .filter_map(|member| member.trim_matches([' ', '\t']).strip_prefix("ot="))
        .next()
}

/// `trace_state` with `th` set to `threshold` in its `ot` member, which moves to the front
/// (W3C: a modified member goes first). Other `ot` fields and other members keep their order.
/// [`Threshold::ALWAYS`] still writes `th:0`, recording that the span was sampled at 100%.
pub fn with_threshold(trace_state: &str, threshold: Threshold) -> String {
    let Some(th) = threshold.encode() else {
        return trace_state.to_owned();
    };
    let mut ot_fields = vec![format!("th:{th}")];
    let mut others = Vec::new();
    for member in trace_state.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        match member.strip_prefix("ot=") {
            Some(ot) => ot_fields.extend(
                ot.split(';')
                    .filter(|f| !f.is_empty() && !f.starts_with("th:"))
                    .map(str::to_owned),
            ),
            None => others.push(member),
        }
    }
    let mut out = format!("ot={}", ot_fields.join(";"));
    for member in others {
        out.push(',');
        out.push_str(member);
    }
    out
}

/// The adjusted count recorded in `trace_state` (`ot=th:…`), or 1.0 when there is none.
pub fn adjusted_count(trace_state: &str) -> f64 {
    OtelTraceState::parse(trace_state)
        .th
        .map_or(1.0, Threshold::adjusted_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th(ratio: f64) -> String {
        Threshold::from_ratio(ratio).unwrap().encode().unwrap()
    }

    fn th_prec(ratio: f64, precision: u8) -> String {
        Threshold::from_ratio_with_precision(ratio, precision)
            .unwrap()
            .encode()
            .unwrap()
    }

    /// The examples of the specification and of the reference implementation
    /// (opentelemetry-collector-contrib pkg/sampling, probability_test.go).
    #[test]
    fn ratio_to_threshold_matches_reference_vectors() {
        assert_eq!(th(1.0), "0");
        assert_eq!(th(0.5), "8");
        assert_eq!(th(0.25), "c");
        assert_eq!(th(0.125), "e");
        assert_eq!(th(1.0 / 16.0), "f");
        // Full precision 1/3: the f64 significand rounds the last digit to "c".
        assert_eq!(th(1.0 / 3.0), "aaaaaaaaaaaaac");
        assert_eq!(th_prec(1.0 / 3.0, 3), "aab");
        assert_eq!(th_prec(2.0 / 3.0, 3), "555");
        assert_eq!(th_prec(1.0, 3), "0");
        assert_eq!(th_prec(1.0 / 3.0, 4), "aaab");
        // Precision rounding (hex rounds up at 8).
        let p = 1.0 - f64::from(0x456789a) / 2f64.powi(28);
        assert_eq!(th(p), "456789a");
        assert_eq!(th_prec(p, 4), "4568");
        assert_eq!(th_prec(p, 1), "4");
        let p = 1.0 - 0x789abcdef_u64 as f64 / 2f64.powi(40);
        assert_eq!(th(p), "0789abcdef");
        assert_eq!(th_prec(p, 3), "078a");
        assert_eq!(th_prec(p, 2), "079");
        assert_eq!(th_prec(p, 1), "08");
        let p = 1.0 - f64::from(0x80801) / 2f64.powi(28);
        assert_eq!(th_prec(p, 3), "00808");
        // The smallest probabilities never round to "drop everything".
        assert_eq!(
            th_prec(1.0 / MAX_ADJUSTED_COUNT as f64, 3),
            "ffffffffffffff"
        );
        assert_eq!(th(16.0 / MAX_ADJUSTED_COUNT as f64), "fffffffffffff");
        assert_eq!(Threshold::from_ratio(0.0).unwrap(), Threshold::NEVER);
        assert!(Threshold::from_ratio(1.5).is_err());
        assert!(Threshold::from_ratio(f64::NAN).is_err());
        assert!(Threshold::from_ratio(-0.1).is_err());
    }

    #[test]
    fn adjusted_counts_and_round_trips() {
        assert_eq!(adjusted_count(""), 1.0);
        assert_eq!(adjusted_count("ot=th:0"), 1.0);
        assert_eq!(adjusted_count("ot=th:8"), 2.0);
        assert_eq!(adjusted_count("ot=th:c"), 4.0);
        assert_eq!(adjusted_count("a=b,ot=th:8;rv:1"), 2.0);
        assert_eq!(adjusted_count("ot=th:zz"), 1.0);
        assert_eq!(adjusted_count("ot=th:123456789abcdef0"), 1.0);
        assert!((adjusted_count("ot=th:e666666666666") - 10.0).abs() < 1e-9);
        for ratio in [1.0, 0.5, 0.1, 0.01, 1.0 / 3.0, 0.999] {
            let t = Threshold::from_ratio(ratio).unwrap();
            assert_eq!(Threshold::parse(&t.encode().unwrap()), Some(t));
            assert!((t.ratio() - ratio).abs() < 1e-15, "{ratio}");
            assert!((t.adjusted_count() - 1.0 / ratio).abs() / (1.0 / ratio) < 1e-12);
        }
        assert_eq!(Threshold::NEVER.encode(), None);
        assert_eq!(Threshold::NEVER.adjusted_count(), 0.0);
    }

    /// The specification's decision rule on known trace IDs: the last 7 bytes are R.
    #[test]
    fn decisions_use_the_last_seven_bytes_of_the_trace_id_or_rv() {
        let id = hex::decode("0af7651916cd43dd8448eb211c80319c").unwrap();
        let r = Randomness::from_trace_id(&id).unwrap();
        assert_eq!(r.value(), 0x48eb211c80319c);
        // 0x48eb21… < 0x8 (50%) threshold 0x80000000000000: dropped at 50%, kept at 75%.
        assert!(!Threshold::parse("8").unwrap().keeps(r));
        assert!(Threshold::parse("4").unwrap().keeps(r));
        assert!(Threshold::parse("48eb211c80319c").unwrap().keeps(r));
        assert!(!Threshold::parse("48eb211c80319d").unwrap().keeps(r));
        assert!(Threshold::ALWAYS.keeps(r));
        assert!(!Threshold::NEVER.keeps(Randomness::from_value(u64::MAX)));
        // An explicit rv overrides the trace ID.
        let r = Randomness::of_span(&id, "ot=rv:fe123456789abc;th:0").unwrap();
        assert_eq!(r.value(), 0xfe123456789abc);
        assert!(Threshold::parse("8").unwrap().keeps(r));
        // A malformed rv falls back to the trace ID.
        let r = Randomness::of_span(&id, "ot=rv:xyz").unwrap();
        assert_eq!(r.value(), 0x48eb211c80319c);
        assert_eq!(Randomness::from_trace_id(&[0; 8]), None);
    }

    #[test]
    fn setting_the_threshold_keeps_other_fields_and_members() {
        let c = Threshold::parse("c").unwrap();
        assert_eq!(with_threshold("", c), "ot=th:c");
        assert_eq!(with_threshold("a=b", c), "ot=th:c,a=b");
        assert_eq!(
            with_threshold("a=b, ot=rv:fe123456789abc;th:8;x:y,z=w", c),
            "ot=th:c;rv:fe123456789abc;x:y,a=b,z=w"
        );
        assert_eq!(with_threshold("ot=th:8", Threshold::ALWAYS), "ot=th:0");
        assert_eq!(with_threshold("a=b", Threshold::NEVER), "a=b");
        let parsed = OtelTraceState::parse("ot=th:c;rv:fe123456789abc,a=b");
        assert_eq!(parsed.th, Some(c));
        assert_eq!(parsed.rv, Randomness::parse("fe123456789abc"));
    }
}
