//! `janus bench` end to end at toy sizes: every scenario starts its own edge, broker and demo
//! game (and the raw echo baseline) as processes, drives them, and reports a JSON line whose
//! figures add up. These check that the load generator works, not how fast anything is
//! (BENCHMARKS.md is where speed is measured).

use std::process::Command;

use serde_json::Value;

/// Runs `janus bench ARGS…` and returns its JSON report.
fn bench(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_janus"))
        .arg("bench")
        .args(args)
        .output()
        .expect("janus runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "janus bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in:\n{stdout}"));
    serde_json::from_str(line).expect("the report is JSON")
}

fn number(report: &Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key} in {report}"))
}

#[test]
fn connect_opens_and_holds_every_session_and_measures_both_tiers() {
    let report = bench(&["connect", "--sessions", "50", "--hold-secs", "1"]);
    assert_eq!(report["scenario"], "connect");
    assert_eq!(number(&report, "sessions"), 50.0);
    assert_eq!(number(&report, "open_failures"), 0.0);
    assert_eq!(number(&report, "hold_failures"), 0.0);
    assert!(number(&report, "edge_rss_mib") > 0.0, "{report}");
    assert!(number(&report, "broker_rss_mib") > 0.0, "{report}");
}

#[test]
fn echo_answers_every_request_through_the_gateway_and_the_raw_baseline() {
    // The last: sessions resumed at a second edge (their broker hands them over).
    for (transport, moved) in [("tcp", false), ("ws", false), ("ws", true)] {
        let mut args = vec![
            "echo",
            "--transport",
            transport,
            "--sessions",
            "4",
            "--inflight",
            "2",
            "--warmup-secs",
            "0",
            "--secs",
            "1",
        ];
        if moved {
            args.push("--moved");
        }
        let report = bench(&args);
        let scenario = if moved { "echo_moved" } else { "echo" };
        assert_eq!(report["scenario"], scenario, "{report}");
        assert_eq!(report["moved"], moved, "{report}");
        assert_eq!(number(&report, "failures"), 0.0, "{report}");
        assert_eq!(number(&report, "raw_failures"), 0.0, "{report}");
        assert!(number(&report, "msgs_per_sec") > 0.0, "{report}");
        assert!(number(&report, "raw_msgs_per_sec") > 0.0, "{report}");
        assert!(number(&report, "p99_ms") >= number(&report, "p50_ms"));
    }
}

#[test]
fn broadcast_and_multicast_reach_every_session() {
    for scenario in ["broadcast", "multicast"] {
        let report = bench(&[scenario, "--sessions", "30", "--rounds", "2"]);
        assert_eq!(report["scenario"], scenario);
        assert_eq!(number(&report, "sessions"), 30.0, "{report}");
        assert_eq!(number(&report, "open_failures"), 0.0, "{report}");
        assert_eq!(number(&report, "missing"), 0.0, "{report}");
        assert_eq!(number(&report, "hold_failures"), 0.0, "{report}");
    }
}

#[test]
fn peers_deliver_every_broadcast_and_answer_every_echo_beside_janus() {
    let report = bench(&[
        "peers",
        "--subscribers",
        "50",
        "--rounds",
        "2",
        "--echo-sessions",
        "4",
        "--inflight",
        "2",
        "--warmup-secs",
        "0",
        "--secs",
        "1",
    ]);
    assert_eq!(report["scenario"], "peers", "{report}");
    assert_eq!(number(&report, "subscribers"), 50.0, "{report}");
    assert_eq!(number(&report, "nats_connect_failures"), 0.0, "{report}");
    assert_eq!(number(&report, "nats_missing"), 0.0, "{report}");
    assert_eq!(number(&report, "nats_deliveries"), 100.0, "{report}");
    assert!(number(&report, "janus_delivered_per_sec") > 0.0, "{report}");
    assert_eq!(number(&report, "nginx_failures"), 0.0, "{report}");
    assert!(number(&report, "nginx_replies") > 0.0, "{report}");
    assert!(number(&report, "janus_msgs_per_sec") > 0.0, "{report}");
    assert!(number(&report, "nginx_p99_ms") >= number(&report, "nginx_p50_ms"));
}

#[test]
fn handshake_reports_the_rate_beside_the_crypto_ceiling() {
    let report = bench(&["handshake", "--concurrency", "2", "--secs", "1"]);
    assert_eq!(number(&report, "failures"), 0.0, "{report}");
    assert!(number(&report, "handshakes_per_sec") > 0.0, "{report}");
    assert!(number(&report, "ceiling_per_thread_sec") > 0.0, "{report}");
    assert!(
        number(&report, "aes_gcm_seal_1k_mib_per_sec") > 0.0,
        "{report}"
    );
}

#[test]
fn too_many_sessions_for_the_open_file_limit_fail_with_the_fix() {
    let output = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(["bench", "connect", "--sessions", "100000000"])
        .output()
        .expect("janus runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("open files") && stderr.contains("ulimit"),
        "{stderr}"
    );
}
