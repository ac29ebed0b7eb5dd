//! The alert rules (`deploy/helm/sidekey/files/alerts.yaml`): valid for
//! Prometheus (`promtool check rules`), each alert firing on the series that
//! should fire it and quiet on healthy ones (`promtool test rules`
//! `deploy/prometheus/alerts.test.yaml`), naming only metrics the agent and
//! the injector export, and rendered by the chart as they are in the file.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use sidekey_testenv::shop::repo_root;
use sidekey_testenv::tool;

fn alerts() -> PathBuf {
    repo_root().join("deploy/helm/sidekey/files/alerts.yaml")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new(tool("SIDEKEY_PROMTOOL"))
        .args(args)
        .current_dir(repo_root().join("deploy/prometheus"))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn the_alert_rules_are_valid_and_each_alert_fires_when_it_should_and_only_then() {
    let out = promtool(&["check", "rules", &alerts().display().to_string()]);
    assert!(out.contains("SUCCESS: 12 rules found"), "{out}");
    let out = promtool(&["test", "rules", "alerts.test.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert of the file has a test case.
    let rules = std::fs::read_to_string(alerts()).unwrap();
    let tests = std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.test.yaml")).unwrap();
    for name in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tests.contains(&format!("alertname: {name}")), "{name} has no promtool test");
        let anchor = format!("#### {name}");
        let ops = std::fs::read_to_string(repo_root().join("docs/operations.md")).unwrap();
        assert!(ops.contains(&anchor), "{name} has no runbook section in docs/operations.md");
    }
}

/// The metric names the code exports, with the suffixes Prometheus sees
/// (every labelled family given one sample, so it is written out).
fn exported() -> BTreeSet<String> {
    let agent = sidekey_agent::metrics::Metrics::default();
    let src = "vault:secret/data/x";
    agent.fetch(src, true);
    agent.version_check(src, true);
    agent.renewal(src, true);
    agent.renewal(src, false);
    agent.failure(src, "transient");
    agent.login(true);
    agent.token_renewal(true);
    agent.notification(true);
    agent.lease_expiry(src, Some(std::time::SystemTime::now()));
    agent.rendered();
    agent.render_failure("f");
    agent.request("vault");
    agent.throttled("vault");
    let injector = sidekey_injector::metrics::Metrics::default();
    injector.review(sidekey_injector::review::Verdict::Denied, 0.001);
    injector.error("not an AdmissionReview");
    injector.webhook_check("service", true);
    let text = format!("{}{}", agent.encode(), injector.encode());
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
        match kind {
            "counter" => names.insert(format!("{}_total", name.trim_end_matches("_total"))),
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
                true
            }
            _ => names.insert(name.to_owned()),
        };
    }
    names
}

#[test]
fn the_alerts_name_only_metrics_the_code_exports() {
    let exported = exported();
    assert!(
        exported.contains("sidekey_agent_ready") && exported.contains("sidekey_injector_requests_total"),
        "{exported:?}"
    );
    let rules = std::fs::read_to_string(alerts()).unwrap();
    let used: BTreeSet<String> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("sidekey_agent_") || w.starts_with("sidekey_injector_"))
        .map(str::to_owned)
        .collect();
    assert!(used.len() >= 8, "{used:?}");
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(unknown.is_empty(), "the alerts use metrics nobody exports: {unknown:?}");
}

#[test]
fn the_chart_renders_the_same_rules_as_a_prometheus_rule() {
    let out = Command::new(tool("SIDEKEY_HELM"))
        .args(["template", "sidekey", "--namespace", "sidekey", "--set", "prometheusRule.enabled=true"])
        .arg(repo_root().join("deploy/helm/sidekey"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = sidekey::yaml::parse_documents(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let rule = docs.iter().find(|d| d["kind"] == "PrometheusRule").expect("a PrometheusRule");
    let file = sidekey::yaml::parse_documents(&std::fs::read_to_string(alerts()).unwrap()).unwrap();
    assert_eq!(rule["spec"], file[0], "the chart's rules are the file's");
}

#[test]
fn the_dashboard_queries_only_metrics_the_code_exports_and_explains_each_panel() {
    let path = repo_root().join("deploy/grafana/sidekey-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let exported = exported();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    let ops = std::fs::read_to_string(repo_root().join("docs/operations.md")).unwrap();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(p["description"].as_str().is_some_and(|d| d.len() > 20), "{title}: no description");
        assert!(ops.contains(&format!("| {title} |")), "{title} is not described in docs/operations.md");
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("sidekey_"))
                .collect();
            assert!(!names.is_empty(), "{title}: {expr}");
            for n in names {
                assert!(exported.contains(n), "{title}: {n} is not exported");
            }
        }
    }
}
