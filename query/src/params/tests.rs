use proptest::prelude::*;

use super::*;

const S: i64 = 1_000_000_000;

#[test]
fn instants_are_rfc3339_or_unix_time() {
    let ns = 1_700_000_000 * S;
    for text in [
        "2023-11-14T22:13:20Z",
        "2023-11-14T23:13:20+01:00",
        "1700000000",
        "1700000000000",
        "1700000000000000",
        "1700000000000000000",
        "1700000000s",
        "1700000000000ms",
        "1700000000000000us",
        "1700000000000000µs",
        "1700000000000000000ns",
        " 1700000000 ",
    ] {
        assert_eq!(parse_instant("t", text).unwrap(), ns, "{text}");
    }
    assert_eq!(
        parse_instant("t", "2023-11-14T23:13:20.5+01:00").unwrap(),
        ns + S / 2
    );
    assert_eq!(
        parse_instant("t", "1544712660.3").unwrap(),
        1_544_712_660_300_000_000
    );
    assert_eq!(parse_instant("t", "1.5").unwrap(), 3 * S / 2);
    assert_eq!(parse_instant("t", "-5ns").unwrap(), -5);
    assert_eq!(parse_instant("t", "-1").unwrap(), -S);
    assert_eq!(
        parse_instant("t", "1970-01-01T00:00:01+01:00").unwrap(),
        -3_599 * S
    );
    for bad in [
        "",
        "yesterday",
        "2023-11-14",
        "99999999999999999999",
        "1e9",
        "1e300",
        "12abc",
        "5m",
        "1.2.3",
        "--5",
        "inf",
    ] {
        let err = parse_instant("start", bad).unwrap_err();
        assert!(matches!(err, ParamError::Instant { .. }), "{bad}: {err}");
        let message = err.to_string();
        assert!(message.starts_with("start: "), "{message}");
        assert!(message.contains("RFC 3339"), "{message}");
    }
}

#[test]
fn durations_take_units_or_bare_seconds() {
    let cases = [
        ("30s", 30 * S),
        ("5m", 300 * S),
        ("250ms", S / 4),
        ("60", 60 * S),
        ("0.5", S / 2),
        ("0", 0),
        ("1500ns", 1_500),
        ("10us", 10_000),
        ("10µs", 10_000),
        ("1h30m", 5_400 * S),
        ("1.5s", 3 * S / 2),
        ("2d", 172_800 * S),
        ("1w", 604_800 * S),
        (" 2ms ", 2_000_000),
    ];
    for (text, ns) in cases {
        assert_eq!(parse_duration("d", text).unwrap(), ns, "{text}");
    }
    for bad in [
        "",
        "-1s",
        "5 parsecs",
        "m",
        "9999999999999999d",
        "fast",
        "1e3",
        "-5",
    ] {
        let err = parse_duration("min_duration", bad).unwrap_err();
        assert!(err.to_string().contains("min_duration"), "{bad}: {err}");
    }
    assert!(matches!(
        parse_positive_duration("step", "0s"),
        Err(ParamError::NotPositive { .. })
    ));
    assert_eq!(parse_positive_duration("step", "1m").unwrap(), 60 * S);
}

#[test]
fn ranges_default_to_the_last_hour_and_must_not_be_empty() {
    let now = 10 * NANOS_PER_HOUR;
    assert_eq!(
        time_range(None, None, now).unwrap(),
        TimeRange {
            start_ns: 9 * NANOS_PER_HOUR,
            end_ns: now
        }
    );
    assert_eq!(
        time_range(Some("5ns"), Some("7ns"), now).unwrap(),
        TimeRange {
            start_ns: 5,
            end_ns: 7
        }
    );
    assert!(time_range(Some("7"), Some("7"), now).is_err());
    let err = time_range(Some("8"), Some("7"), now).unwrap_err();
    assert!(err.to_string().contains("start"), "{err}");
}

#[test]
fn params_keep_repeats_and_refuse_ambiguity() {
    let params = Params(vec![
        ("attr".into(), "a=1".into()),
        ("attr".into(), "b".into()),
        ("service".into(), "x".into()),
        ("service".into(), "y".into()),
        ("operation".into(), String::new()),
    ]);
    assert_eq!(params.all("attr").collect::<Vec<_>>(), ["a=1", "b"]);
    assert!(params.one("service").is_err());
    assert_eq!(params.one("operation").unwrap(), None);
    assert!(params.reject_unknown(&["attr", "service"]).is_err());
    assert!(
        params
            .reject_unknown(&["attr", "service", "operation"])
            .is_ok()
    );
}

#[test]
fn formats_are_the_documented_ones() {
    assert_eq!(
        format_instant(1_485_445_591_639_875_000),
        "2017-01-26T15:46:31.639875000Z"
    );
    assert_eq!(format_duration(90 * S), "90s");
    assert_eq!(format_duration(S / 4), "250ms");
    assert_eq!(format_duration(3_600 * S), "1h");
    assert_eq!(format_duration(1_500), "1500ns");
    assert_eq!(format_duration(0), "0s");
}

proptest! {
    #[test]
    fn instants_round_trip(ns in any::<i64>()) {
        prop_assert_eq!(parse_instant("t", &format_instant(ns)).unwrap(), ns);
        prop_assert_eq!(parse_instant("t", &format!("{ns}ns")).unwrap(), ns);
    }

    #[test]
    fn durations_round_trip(ns in 0..i64::MAX) {
        prop_assert_eq!(parse_duration("d", &format_duration(ns)).unwrap(), ns);
    }

    /// Seconds, milliseconds, microseconds and nanoseconds of any time from 1973 to 2262
    /// name the same instant.
    #[test]
    fn bare_unix_times_of_every_unit_agree(seconds in 100_000_000i64..9_000_000_000) {
        let ns = seconds * S;
        for text in [
            seconds.to_string(),
            (seconds * 1_000).to_string(),
            (seconds * 1_000_000).to_string(),
            ns.to_string(),
        ] {
            prop_assert_eq!(parse_instant("t", &text).unwrap(), ns, "{}", text);
        }
    }
}

/// The same text as `start` of every native endpoint: search, latency, dependencies,
/// metrics and the SQL range functions.
fn start_everywhere(text: &str) -> Vec<Option<i64>> {
    use datafusion::prelude::lit;
    let end = "2262-01-01T00:00:00Z";
    let search = crate::search::http::request_from(&Params::from_pairs(&[("start", text)]))
        .ok()
        .and_then(|r| r.spans.start_min_ns);
    let latency: Option<crate::latency::LatencyParams> =
        serde_json::from_value(serde_json::json!({"start": text, "end": end})).ok();
    let latency = latency
        .and_then(|p| p.parse(0).ok())
        .map(|q| q.range.start_ns);
    let dependencies = time_range(Some(text), Some(end), 0)
        .ok()
        .map(|r| r.start_ns);
    let pairs = [
        ("metric".to_owned(), "m".to_owned()),
        ("start".to_owned(), text.to_owned()),
        ("end".to_owned(), end.to_owned()),
        ("step".to_owned(), "1000d".to_owned()),
    ];
    let metrics = crate::metrics::query::parse_range_query(&pairs, 0)
        .ok()
        .map(|q| q.start);
    let sql = crate::range_functions::range_of("service_graph", &[lit(text), lit(end)])
        .ok()
        .map(|r| r.start_ns);
    vec![search, latency, dependencies, metrics, sql]
}

/// The same text as a duration: search's `min_duration`, latency's and metrics' `step`
/// (over a range of ten steps of `ns`, so the step limits hold).
fn duration_everywhere(text: &str, ns: i64) -> Vec<Option<i64>> {
    let end = format!("{}ns", ns.saturating_mul(10));
    let search = crate::search::http::request_from(&Params::from_pairs(&[("min_duration", text)]))
        .ok()
        .and_then(|r| r.spans.min_duration_ns);
    let latency: Option<crate::latency::LatencyParams> =
        serde_json::from_value(serde_json::json!({"step": text, "start": "0ns", "end": end})).ok();
    let latency = latency
        .and_then(|p| p.parse(0).ok())
        .and_then(|q| q.step_ns);
    let pairs = [
        ("metric".to_owned(), "m".to_owned()),
        ("step".to_owned(), text.to_owned()),
        ("start".to_owned(), "0ns".to_owned()),
        ("end".to_owned(), end.clone()),
    ];
    let metrics = crate::metrics::query::parse_range_query(&pairs, 0)
        .ok()
        .map(|q| q.step);
    vec![search, latency, metrics]
}

#[test]
fn a_bare_number_means_the_same_on_every_endpoint() {
    assert_eq!(start_everywhere("60"), vec![Some(60 * S); 5]);
    assert_eq!(duration_everywhere("60", 60 * S), vec![Some(60 * S); 3]);
    assert_eq!(duration_everywhere("1500ns", 1_500), vec![Some(1_500); 3]);
    assert_eq!(start_everywhere("yesterday"), vec![None; 5]);
}

fn instant_text() -> impl Strategy<Value = String> {
    (0i64..9_000_000_000, 0u32..4, 0u32..1_000_000_000).prop_map(|(seconds, form, nanos)| {
        let ns = seconds * S + i64::from(nanos);
        match form {
            0 => format_instant(ns),
            1 => seconds.to_string(),
            2 => format!("{ns}ns"),
            _ => format!("{seconds}.{nanos:09}"),
        }
    })
}

fn duration_text() -> impl Strategy<Value = String> {
    (1i64..1_000_000_000_000, 0u32..3).prop_map(|(ns, form)| match form {
        0 => format_duration(ns),
        1 => format!("{ns}ns"),
        _ => format!("{}.{:09}", ns / S, ns % S),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_same_time_means_the_same_on_every_endpoint(text in instant_text()) {
        let expected = parse_instant("start", &text).ok();
        prop_assert!(expected.is_some(), "{}", text);
        prop_assert_eq!(start_everywhere(&text), vec![expected; 5], "{}", text);
    }

    #[test]
    fn the_same_duration_means_the_same_on_every_endpoint(text in duration_text()) {
        let expected = parse_duration("d", &text).ok();
        let ns = expected.unwrap_or(0);
        prop_assert!(ns > 0, "{}", text);
        prop_assert_eq!(duration_everywhere(&text, ns), vec![expected; 3], "{}", text);
    }
}
