#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use super::*;
use prometheus::proto::MetricType;

use crate::{
    config::Reason, judge::trees::TreeState, outputs::audit::AuditStatsSnapshot,
    source::CounterSnapshot, source::event::GapCause,
};

fn fresh() -> (Registry, Metrics) {
    let r = Registry::new();
    let m = Metrics::new(&r, "1.2.3").unwrap();
    (r, m)
}

fn value(r: &Registry, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for mf in r.gather() {
        if mf.name() != metric {
            continue;
        }
        for m in mf.get_metric() {
            let ok = labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            });
            if ok && m.get_label().len() == labels.len() {
                return Some(match mf.get_field_type() {
                    MetricType::COUNTER => m.get_counter().get_value(),
                    MetricType::GAUGE => m.get_gauge().get_value(),
                    _ => f64::NAN,
                });
            }
        }
    }
    None
}

#[test]
fn names_labels_and_units_conform() {
    let (r, _m) = fresh();
    let forbidden = ["pid", "tgid", "session", "session_id", "cmdline", "command"];
    let allowed = [
        "host", "server", "reason", "outcome", "state", "kind", "tier", "version", "cause",
    ];
    let families = r.gather();
    assert!(families.len() > 20, "{} families", families.len());
    for mf in &families {
        let n = mf.name();
        if n.starts_with("process_") {
            continue;
        }
        assert!(n.starts_with(PREFIX), "{n}: prefix");
        match mf.get_field_type() {
            MetricType::COUNTER => assert!(n.ends_with("_total"), "{n}: counter"),
            _ => assert!(!n.ends_with("_total"), "{n}: non-counter ending _total"),
        }
        for bad in [
            "_ms",
            "_milliseconds",
            "_kb",
            "_mb",
            "_kilobytes",
            "_megabytes",
        ] {
            assert!(!n.contains(bad), "{n}: not a base unit");
        }
        if n.contains("memory") {
            assert!(n.ends_with("_bytes") || n.ends_with("_bytes_total"), "{n}");
        }
        // ("_age", not "age": lineage_gaps_total is a count.)
        if n.contains("latency") || n.contains("duration") || n.contains("_age") {
            assert!(n.ends_with("_seconds"), "{n}");
        }
        for m in mf.get_metric() {
            for l in m.get_label() {
                assert!(!forbidden.contains(&l.name()), "{n}: label {}", l.name());
                assert!(allowed.contains(&l.name()), "{n}: label {}", l.name());
            }
        }
    }
}

#[test]
fn zeros_exported_from_the_start() {
    let (r, _m) = fresh();
    for reason in Reason::ALL {
        let reason = reason_label(reason);
        let detected = "mcp_reaper_orphans_detected_total";
        assert_eq!(value(&r, detected, &[("reason", reason)]), Some(0.0));
        for outcome in ReapOutcome::ALL {
            let labels = [("reason", reason), ("outcome", outcome.as_str())];
            assert_eq!(
                value(&r, "mcp_reaper_trees_reaped_total", &labels),
                Some(0.0),
                "{labels:?}"
            );
        }
    }
    for state in STATES {
        let s = state.as_str();
        let labels = [("host", NONE), ("server", NONE), ("state", s)];
        assert_eq!(value(&r, "mcp_reaper_trees", &labels), Some(0.0));
        for g in [
            "mcp_reaper_tree_processes",
            "mcp_reaper_tree_resident_memory_bytes",
            "mcp_reaper_tree_proportional_memory_bytes",
        ] {
            assert_eq!(value(&r, g, &[("state", s)]), Some(0.0), "{g}");
        }
    }
    for kind in EventKind::ALL {
        let labels = [("kind", kind.as_str())];
        assert_eq!(value(&r, "mcp_reaper_events_total", &labels), Some(0.0));
    }
    for cause in GapCause::ALL {
        let labels = [("cause", cause.as_str())];
        assert_eq!(
            value(&r, "mcp_reaper_lineage_gaps_total", &labels),
            Some(0.0),
            "{labels:?}"
        );
    }
    for n in [
        "mcp_reaper_lost_events_total",
        "mcp_reaper_degraded",
        "mcp_reaper_oldest_orphan_age_seconds",
        "mcp_reaper_last_successful_reap_timestamp_seconds",
        "mcp_reaper_audit_records_written_total",
        "mcp_reaper_audit_records_dropped_total",
        "mcp_reaper_audit_write_failures_total",
    ] {
        assert_eq!(value(&r, n, &[]), Some(0.0), "{n}");
    }
}

#[test]
fn text_encoding_has_build_info_and_histograms() {
    let (r, m) = fresh();
    m.orphan_detected(Reason::PeerReleased, Some(Duration::from_micros(300)));
    let text = encode(&r);
    assert!(
        text.contains("mcp_reaper_build_info{version=\"1.2.3\"} 1"),
        "{text}"
    );
    assert!(text.contains("mcp_reaper_detection_latency_seconds_bucket{le=\"0.0001\"} 0"));
    assert!(text.contains("mcp_reaper_detection_latency_seconds_bucket{le=\"0.0005\"} 1"));
    assert!(text.contains("# TYPE mcp_reaper_reap_duration_seconds histogram"));
    assert!(
        text.contains("process_resident_memory_bytes"),
        "process collector"
    );
    assert!(Metrics::new(&r, "again").is_err(), "double registration");
}

#[test]
fn set_trees_replaces_and_keeps_placeholders() {
    let (r, m) = fresh();
    let t = |host, server, state, orphaned_for| TreeSample {
        host,
        server,
        state,
        processes: 3,
        rss: 100,
        pss: 60,
        orphaned_for,
    };
    m.set_trees(&[
        t("claude-code", "server-everything", TreeState::Live, None),
        t("claude-code", "server-everything", TreeState::Live, None),
        t(
            "cursor",
            "fs",
            TreeState::Orphaned,
            Some(Duration::from_secs(7)),
        ),
        t("", "bad\"name", TreeState::Suspect, None),
    ]);
    let live = [
        ("host", "claude-code"),
        ("server", "server-everything"),
        ("state", "live"),
    ];
    assert_eq!(value(&r, "mcp_reaper_trees", &live), Some(2.0));
    let odd = [("host", NONE), ("server", OTHER), ("state", "suspect")];
    assert_eq!(value(&r, "mcp_reaper_trees", &odd), Some(1.0));
    let live_procs = value(&r, "mcp_reaper_tree_processes", &[("state", "live")]);
    assert_eq!(live_procs, Some(6.0));
    let orphan_pss = [("state", "orphaned")];
    let pss = value(&r, "mcp_reaper_tree_proportional_memory_bytes", &orphan_pss);
    assert_eq!(pss, Some(60.0));
    assert_eq!(
        value(&r, "mcp_reaper_oldest_orphan_age_seconds", &[]),
        Some(7.0)
    );

    m.set_trees(&[t("cursor", "fs", TreeState::Live, None)]);
    assert_eq!(
        value(&r, "mcp_reaper_trees", &live),
        None,
        "stale series removed"
    );
    let orphaned = [("host", "cursor"), ("server", "fs"), ("state", "orphaned")];
    assert_eq!(value(&r, "mcp_reaper_trees", &orphaned), None);
    let none_live = [("host", NONE), ("server", NONE), ("state", "live")];
    assert_eq!(value(&r, "mcp_reaper_trees", &none_live), Some(0.0));
    assert_eq!(
        value(&r, "mcp_reaper_tree_processes", &[("state", "live")]),
        Some(3.0)
    );
    assert_eq!(
        value(&r, "mcp_reaper_oldest_orphan_age_seconds", &[]),
        Some(0.0)
    );
}

#[test]
fn identities_are_capped() {
    let (r, m) = fresh();
    for i in 0..MAX_IDENTITIES + 10 {
        m.respawn("host", &format!("server-{i}"));
    }
    let other = [("host", OTHER), ("server", OTHER)];
    assert_eq!(value(&r, "mcp_reaper_respawns_total", &other), Some(10.0));
    let n = r
        .gather()
        .iter()
        .find(|mf| mf.name() == "mcp_reaper_respawns_total")
        .map(|mf| mf.get_metric().len());
    assert_eq!(n, Some(MAX_IDENTITIES + 1));
}

#[test]
fn source_counters_sync_by_delta_and_survive_resets() {
    let (r, m) = fresh();
    let snap = |exec, lost| CounterSnapshot {
        exec,
        fork: 0,
        exit: 0,
        close: 0,
        decode_errors: 0,
        lost,
        kernel_read_errors: 0,
    };
    m.observe_source_counters(&snap(10, 1));
    m.observe_source_counters(&snap(15, 1));
    m.observe_source_counters(&snap(4, 0)); // a new source started at zero
    m.event(EventKind::Close);
    let exec = value(&r, "mcp_reaper_events_total", &[("kind", "exec")]);
    assert_eq!(exec, Some(19.0));
    assert_eq!(value(&r, "mcp_reaper_lost_events_total", &[]), Some(1.0));
    assert_eq!(
        value(&r, "mcp_reaper_events_total", &[("kind", "close")]),
        Some(1.0)
    );
}

#[test]
fn reaps_tiers_and_flags() {
    let (r, m) = fresh();
    m.tree_reaped(
        Reason::HostExited,
        ReapOutcome::Killed,
        4096,
        Duration::from_secs(3),
    );
    m.tree_reaped(
        Reason::HostExited,
        ReapOutcome::DryRun,
        1 << 20,
        Duration::ZERO,
    );
    let killed = [("reason", "host_exited"), ("outcome", "killed")];
    assert_eq!(
        value(&r, "mcp_reaper_trees_reaped_total", &killed),
        Some(1.0)
    );
    let reclaimed = value(&r, "mcp_reaper_reclaimed_memory_bytes_total", &[]);
    assert_eq!(reclaimed, Some(4096.0));
    let ts = value(&r, "mcp_reaper_last_successful_reap_timestamp_seconds", &[]);
    assert!(ts.is_some_and(|t| t > 1.0e9));

    m.set_degraded(true);
    assert_eq!(value(&r, "mcp_reaper_degraded", &[]), Some(1.0));
    m.set_tracked(42);
    m.resync();
    m.lineage_gap(GapCause::WatchFull, 2);
    m.lineage_gap(GapCause::WatchFull, 1);
    assert_eq!(
        value(
            &r,
            "mcp_reaper_lineage_gaps_total",
            &[("cause", "watch_full")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &r,
            "mcp_reaper_lineage_gaps_total",
            &[("cause", "decode_error")]
        ),
        Some(0.0)
    );
    m.config_reload_failed();
    assert_eq!(value(&r, "mcp_reaper_tracked_processes", &[]), Some(42.0));
    assert_eq!(value(&r, "mcp_reaper_resyncs_total", &[]), Some(1.0));
    assert_eq!(
        value(&r, "mcp_reaper_config_reload_failures_total", &[]),
        Some(1.0)
    );
}

/// Every `mcp_reaper_event_source_info` series as (tier, value).
fn tier_series(r: &Registry) -> Vec<(String, f64)> {
    r.gather()
        .iter()
        .filter(|mf| mf.name() == "mcp_reaper_event_source_info")
        .flat_map(|mf| mf.get_metric().iter())
        .map(|m| {
            let labels = m.get_label();
            assert_eq!(labels.len(), 1, "only the tier label");
            assert_eq!(labels[0].name(), "tier");
            (labels[0].value().to_string(), m.get_gauge().get_value())
        })
        .collect()
}

#[test]
fn source_info_is_one_series_of_value_one() {
    let (r, m) = fresh();
    assert_eq!(tier_series(&r), [], "no tier claimed before a source runs");
    m.set_tier("ebpf");
    assert_eq!(tier_series(&r), [("ebpf".to_string(), 1.0)]);
    m.set_tier("poll");
    assert_eq!(tier_series(&r), [("poll".to_string(), 1.0)]);
    m.set_tier("carrier-pigeon");
    assert_eq!(tier_series(&r), [(OTHER.to_string(), 1.0)]);
    m.set_tier("pidfd");
    let text = encode(&r);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("mcp_reaper_event_source_info"))
        .collect();
    assert_eq!(lines, ["mcp_reaper_event_source_info{tier=\"pidfd\"} 1"]);
    assert!(text.contains("# TYPE mcp_reaper_event_source_info gauge"));
}

#[test]
fn source_info_is_never_seen_with_two_tiers_or_none() {
    let (r, m) = fresh();
    m.set_tier("ebpf");
    let m = std::sync::Arc::new(m);
    let flipper = {
        let m = std::sync::Arc::clone(&m);
        std::thread::spawn(move || {
            for i in 0..20_000 {
                m.set_tier(TIERS[i % TIERS.len()]);
            }
        })
    };
    while !flipper.is_finished() {
        let series = tier_series(&r);
        assert_eq!(series.len(), 1, "{series:?}");
        assert!((series[0].1 - 1.0).abs() < f64::EPSILON, "{series:?}");
    }
    flipper.join().unwrap();
}

#[test]
fn label_values_are_snake_case() {
    let (r, m) = fresh();
    m.set_tier("ebpf");
    m.respawn("host", "server");
    let open = ["host", "server", "version"];
    for mf in r.gather() {
        for metric in mf.get_metric() {
            for l in metric.get_label() {
                if open.contains(&l.name()) {
                    continue;
                }
                let v = l.value();
                assert!(
                    !v.is_empty()
                        && v.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "{}{{{}=\"{v}\"}}: not snake_case",
                    mf.name(),
                    l.name()
                );
            }
        }
    }
    let reasons: Vec<&str> = Reason::ALL.into_iter().map(reason_label).collect();
    assert!(reasons.contains(&"peer_released") && reasons.contains(&"host_exited"));
    assert_eq!(ReapOutcome::DryRun.as_str(), "dry_run");
}

#[test]
fn audit_counters_follow_the_sink_by_delta() {
    let (r, m) = fresh();
    let snap = |written, dropped, write_failures| AuditStatsSnapshot {
        written,
        write_failures,
        dropped,
    };
    m.observe_audit(&snap(10, 0, 0));
    m.observe_audit(&snap(12, 3, 1));
    m.observe_audit(&snap(12, 3, 1)); // nothing new: nothing counted
    m.observe_audit(&snap(15, 4, 3));
    let get = |n| value(&r, n, &[]);
    assert_eq!(get("mcp_reaper_audit_records_written_total"), Some(15.0));
    assert_eq!(get("mcp_reaper_audit_records_dropped_total"), Some(4.0));
    assert_eq!(get("mcp_reaper_audit_write_failures_total"), Some(3.0));
}
