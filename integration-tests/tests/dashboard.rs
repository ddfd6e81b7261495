//! The compose stack's Grafana dashboard (deploy/observability/grafana/dashboards/janus.json)
//! against the metrics the edge and the broker really export: every series a panel queries
//! exists, the panels the operators asked for are there, and every panel uses a provisioned
//! data source. (That Prometheus scrapes every replica is shown in the full-stack suite.)

use std::collections::BTreeSet;

use serde_json::Value;

const DASHBOARD: &str = include_str!("../../deploy/observability/grafana/dashboards/janus.json");
const DATASOURCES: &str =
    include_str!("../../deploy/observability/grafana/provisioning/datasources/janus.yml");

/// Every `janus_…` series name in `expr`, histogram suffixes folded into the family name.
fn series(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("janus_"))
        .map(|word| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word)
                .to_owned()
        })
        .collect()
}

fn panels() -> Vec<Value> {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] != "row")
        .cloned()
        .collect()
}

#[test]
fn every_queried_series_is_exported_by_a_tier() {
    let exported: BTreeSet<String> = janus_edge::metrics::Metrics::new()
        .registry
        .names()
        .into_iter()
        .chain(janus_broker::metrics::Metrics::new().registry.names())
        .collect();
    let mut queried = BTreeSet::new();
    for panel in panels() {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let names = series(expr);
            assert!(!names.is_empty(), "{expr} queries no Janus series");
            for name in names {
                assert!(
                    exported.contains(&name),
                    "panel {} queries {name}, which no tier exports ({exported:?})",
                    panel["title"]
                );
                queried.insert(name);
            }
        }
    }
    for wanted in [
        "janus_edge_sessions",
        "janus_edge_handshakes_total",
        "janus_edge_frames_total",
        "janus_edge_closes_total",
        "janus_broker_push_fanout_seconds",
        "janus_broker_tunnel_seconds",
    ] {
        assert!(queried.contains(wanted), "no panel shows {wanted}");
    }
}

#[test]
fn every_panel_uses_a_provisioned_data_source() {
    for panel in panels() {
        let uid = panel["datasource"]["uid"].as_str().expect("datasource uid");
        assert!(
            DATASOURCES.contains(&format!("uid: {uid}")),
            "panel {} uses data source {uid}, which is not provisioned",
            panel["title"]
        );
    }
}

#[test]
fn series_names_fold_histogram_suffixes() {
    assert_eq!(
        series(
            "histogram_quantile(0.99, sum by (le) (rate(janus_edge_handshake_seconds_bucket[5m])))"
        ),
        vec!["janus_edge_handshake_seconds"]
    );
    assert_eq!(
        series("sum(janus_edge_sessions) + janus_broker_live{what=\"sessions\"}"),
        vec!["janus_edge_sessions", "janus_broker_live"]
    );
}
