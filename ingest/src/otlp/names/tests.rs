//! Case tables for the name translation, one row per rule.

use super::*;

#[test]
fn metric_names() {
    use MetricKind::*;
    let cases: &[(&str, &str, MetricKind, Option<&str>)] = &[
        // escaping: every run of characters outside [a-zA-Z0-9:] is one `_`
        (
            "system.filesystem.usage",
            "By",
            Gauge,
            Some("system_filesystem_usage_bytes"),
        ),
        ("foo__bar", "", Gauge, Some("foo_bar")),
        ("metric:name", "", Gauge, Some("metric:name")),
        ("3.14.digits", "", Gauge, Some("_3_14_digits")),
        ("", "", Gauge, None),
        ("...", "", Gauge, None),
        // unit suffixes
        (
            "http.server.duration",
            "s",
            Histogram,
            Some("http_server_duration_seconds"),
        ),
        ("latency", "ms", Summary, Some("latency_milliseconds")),
        ("temp", "Cel", Gauge, Some("temp_celsius")),
        (
            "network.io",
            "By/s",
            Gauge,
            Some("network_io_bytes_per_second"),
        ),
        ("speed", "km/h", Gauge, Some("speed_km_per_hour")),
        (
            "packets",
            "{packet}/s",
            Counter,
            Some("packets_per_second_total"),
        ),
        ("x", "{request}", Gauge, Some("x")),
        ("bytes.read", "By", Counter, Some("bytes_read_total")),
        ("weird", "my unit", Gauge, Some("weird_my_unit")),
        ("memory", "MiBy", UpDownCounter, Some("memory_mebibytes")),
        // type suffixes
        ("requests", "1", Counter, Some("requests_total")),
        ("foo.total.count", "", Counter, Some("foo_count_total")),
        ("cpu.utilization", "1", Gauge, Some("cpu_utilization_ratio")),
        ("ratio.value", "1", Gauge, Some("value_ratio")),
        ("queue.size", "1", UpDownCounter, Some("queue_size")),
        (
            "process.cpu.time",
            "s",
            Counter,
            Some("process_cpu_time_seconds_total"),
        ),
    ];
    for (name, unit, kind, want) in cases {
        assert_eq!(
            metric_name(name, unit, *kind).as_deref(),
            *want,
            "{name:?} {unit:?} {kind:?}"
        );
    }
}

#[test]
fn label_names() {
    let cases: &[(&str, Option<&str>)] = &[
        ("job", Some("job")),
        ("http.method", Some("http_method")),
        ("k8s.pod.name", Some("k8s_pod_name")),
        ("a..b", Some("a__b")),
        ("0abc", Some("key_0abc")),
        ("_foo", Some("key_foo")),
        ("__foo__", Some("__foo__")),
        ("é", Some("key_")),
        (".", Some("key_")),
        ("...", None),
        ("", None),
    ];
    for (key, want) in cases {
        assert_eq!(label_name(key).as_deref(), *want, "{key:?}");
    }
}

#[test]
fn numbers() {
    for (v, want) in [
        (1.5, "1.5"),
        (123.0, "123"),
        (0.0, "0"),
        (1e-7, "1e-7"),
        (-2.5e-9, "-2.5e-9"),
        (1e21, "1e+21"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "Infinity"),
    ] {
        assert_eq!(float_string(v), want);
    }
    for (v, want) in [
        (0.005, "0.005"),
        (1.0, "1"),
        (1e-9, "0.000000001"),
        (2.5e6, "2500000"),
        (f64::INFINITY, "+Inf"),
    ] {
        assert_eq!(bound_string(v), want);
    }
}
