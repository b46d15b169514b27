//! The monitoring files: the Grafana dashboard (`deploy/grafana/joinshield.json`), the file of
//! its queries as recording rules (`deploy/prometheus/dashboard.rules.yml`) and the playbook's
//! alerting rules (`deploy/prometheus/alerts.yml`) with their unit tests. promtool validates the
//! PromQL and runs the unit tests; the dashboard and the rules file must hold the same queries;
//! every metric and label they name must be one a running shield exports.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use support::promtool::promtool_succeeds;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/joinshield.json"))
        .expect("deploy/grafana/joinshield.json is JSON")
}

/// Every panel, those inside collapsed rows included, in order.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// Every PromQL query of the dashboard: panel targets and annotation queries.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().expect("a target's expr").to_owned());
        }
    }
    for a in dashboard["annotations"]["list"]
        .as_array()
        .expect("annotations")
    {
        if let Some(e) = a["expr"].as_str() {
            out.push(e.to_owned());
        }
    }
    out
}

/// A query as the dashboard sends it with "All" selected and the default time range.
fn with_variables_at_all(query: &str) -> String {
    query
        .replace("$__rate_interval", "1m")
        .replace("$instance", ".+")
        .replace("$route", ".+")
}

fn normalise(expr: &str) -> String {
    expr.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The rules of a rules file: (record or alert name, expr).
fn rules(path: &str) -> Vec<(String, String)> {
    let file = yaml(path);
    let mut out = Vec::new();
    for group in file["groups"].as_array().expect("groups") {
        for r in group["rules"].as_array().expect("rules") {
            let name = r["record"]
                .as_str()
                .or_else(|| r["alert"].as_str())
                .expect("a record or alert name");
            let expr = r["expr"].as_str().expect("an expr");
            out.push((name.to_owned(), expr.to_owned()));
        }
    }
    out
}

#[test]
fn the_rule_files_pass_promtool_check() {
    promtool_succeeds(&[
        "check",
        "rules",
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/dashboard.rules.yml",
    ]);
}

#[test]
fn the_alerts_pass_their_unit_tests() {
    promtool_succeeds(&["test", "rules", "deploy/prometheus/alerts.test.yml"]);
}

#[test]
fn the_dashboard_and_its_rules_file_hold_the_same_queries() {
    let dashboard: BTreeSet<String> = dashboard_queries(&dashboard())
        .iter()
        .map(|q| normalise(&with_variables_at_all(q)))
        .collect();
    for q in &dashboard {
        assert!(
            !q.contains('$'),
            "a dashboard query uses a variable the rules file has no value for: {q}"
        );
    }
    let rules: BTreeSet<String> = rules("deploy/prometheus/dashboard.rules.yml")
        .iter()
        .map(|(_, e)| normalise(e))
        .collect();
    let only_dashboard: Vec<_> = dashboard.difference(&rules).collect();
    let only_rules: Vec<_> = rules.difference(&dashboard).collect();
    assert!(
        only_dashboard.is_empty() && only_rules.is_empty(),
        "queries of the dashboard missing from dashboard.rules.yml: {only_dashboard:#?}\n\
         queries of dashboard.rules.yml no panel uses: {only_rules:#?}"
    );
    assert!(
        dashboard.len() >= 15,
        "the dashboard was read: {dashboard:?}"
    );
}

#[test]
fn the_dashboard_has_a_row_per_playbook_signal_and_a_route_class_variable() {
    let d = dashboard();
    let top = d["panels"].as_array().expect("panels");
    let rows: Vec<&str> = top
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().expect("a row title"))
        .collect();
    for (signal, metric) in [
        ("Guest error rate", "joinshield_requests_total"),
        ("429/403", "joinshield_denials_total"),
        ("Bans", "joinshield_bans_active"),
        ("reloads", "joinshield_config_reloads_total"),
        ("Upstream", "joinshield_upstream_latency_seconds_bucket"),
    ] {
        let at = top
            .iter()
            .position(|p| {
                p["type"] == "row" && p["title"].as_str().is_some_and(|t| t.contains(signal))
            })
            .unwrap_or_else(|| panic!("no row for {signal}: {rows:?}"));
        // The row's panels: those after it up to the next row (or inside it when collapsed).
        let mut queries = Vec::new();
        let inner = top[at]["panels"].as_array().into_iter().flatten();
        let after = top[at + 1..].iter().take_while(|p| p["type"] != "row");
        for p in inner.chain(after) {
            for t in p["targets"].as_array().into_iter().flatten() {
                queries.push(t["expr"].as_str().expect("expr").to_owned());
            }
        }
        assert!(
            queries.iter().any(|q| q.contains(metric)),
            "the {signal} row has no panel on {metric}: {queries:?}"
        );
    }

    let variables = d["templating"]["list"].as_array().expect("variables");
    let route = variables
        .iter()
        .find(|v| v["name"] == "route")
        .expect("a route class variable");
    assert_eq!(route["type"], "query");
    assert_eq!(route["includeAll"], true);
    assert_eq!(route["multi"], true);
    assert_eq!(
        route["allValue"], ".+",
        "All must match every class (the rules use .+)"
    );
    let definition = route["definition"].as_str().expect("a definition");
    assert!(
        definition.starts_with("label_values(joinshield_requests_total")
            && definition.ends_with(", route)"),
        "the route classes are the route labels the shield exports: {definition}"
    );
    let instance = variables
        .iter()
        .find(|v| v["name"] == "instance")
        .expect("a shield (instance) variable");
    assert_eq!(instance["allValue"], ".+");

    // Every panel queries the dashboard's data source variable, so the JSON imports anywhere.
    for p in panels(&d).into_iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {} names a fixed data source",
            p["title"]
        );
    }
    // The panels that filter by route class use the variable.
    let by_route = dashboard_queries(&d)
        .into_iter()
        .filter(|q| q.contains("route=~\"$route\""))
        .count();
    assert!(
        by_route >= 10,
        "only {by_route} queries follow the route class variable"
    );
}

#[test]
fn each_playbook_alert_fires_in_one_unit_test_and_stays_silent_in_another() {
    let alerts: BTreeMap<String, Value> = yaml("deploy/prometheus/alerts.yml")["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .filter_map(|r| r["alert"].as_str().map(|a| (a.to_owned(), r.clone())))
        .collect();
    for (name, severity) in [
        ("JoinshieldGuestErrorRate", "sev1"),
        ("JoinshieldDenialRate", "sev2"),
        ("JoinshieldDown", "sev1"),
        ("JoinshieldConfigRejected", "sev3"),
        ("JoinshieldBansSpike", "sev2"),
    ] {
        let rule = alerts
            .get(name)
            .unwrap_or_else(|| panic!("alerts.yml has no {name}"));
        assert_eq!(rule["labels"]["severity"], severity, "{name}'s severity");
        assert!(
            rule["annotations"]["summary"].is_string()
                && rule["annotations"]["description"].is_string(),
            "{name} says what happened and what to do"
        );
    }

    let tests = yaml("deploy/prometheus/alerts.test.yml");
    assert_eq!(strings(&tests["rule_files"]), ["alerts.yml"]);
    let mut fires: BTreeSet<String> = BTreeSet::new();
    let mut silent: BTreeSet<String> = BTreeSet::new();
    for t in tests["tests"].as_array().expect("tests") {
        for a in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = a["alertname"].as_str().expect("alertname").to_owned();
            match a["exp_alerts"].as_array() {
                Some(e) if e.is_empty() => silent.insert(name),
                Some(_) => fires.insert(name),
                None => panic!("{name}: a test without exp_alerts"),
            };
        }
    }
    for name in alerts.keys() {
        assert!(fires.contains(name), "no unit test fires {name}");
        assert!(silent.contains(name), "no unit test keeps {name} silent");
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// What a shield's `/metrics` holds: each sample name with the label names it carries.
async fn exported() -> BTreeMap<String, BTreeSet<String>> {
    // A limit of one request, so that the second is denied and the denial family has a sample
    // (its series appear with their first count).
    let h = support::spawn_shield(
        "",
        "[[limit]]\nname = \"one\"\nroutes = [\"events\"]\nkey = \"ip\"\nrate = \"1/h\"\nburst = 1\n",
    )
    .await;
    let first = support::get(h.addr(), "/api/v1/events/demo-wedding-2026", "").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let second = support::get(h.addr(), "/api/v1/events/demo-wedding-2026", "").await;
    assert_eq!(second.status, 429, "{}", second.text());
    let scrape = support::get(h.shield.admin_addr, "/metrics", "").await;
    assert_eq!(scrape.status, 200);
    let text = scrape.text();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let name = words.next().expect("a name").to_owned();
            if words.next() == Some("histogram") {
                for suffix in ["_bucket", "_sum", "_count"] {
                    out.entry(format!("{name}{suffix}")).or_default();
                }
            } else {
                out.entry(name).or_default();
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_owned()).or_default();
        if let Some(body) = line[name_end..].strip_prefix('{') {
            for (label, _) in label_pairs(body.split('}').next().unwrap_or_default()) {
                labels.insert(label);
            }
        }
    }
    out
}

/// `a="x",b=~"y"` as (label, operator-and-value) pairs.
fn label_pairs(body: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let op_at = rest
            .find(['=', '!'])
            .unwrap_or_else(|| panic!("a matcher without an operator: {rest}"));
        let label = rest[..op_at].trim().to_owned();
        let quote = rest[op_at..].find('"').expect("a quoted value") + op_at;
        let mut end = quote + 1;
        let bytes = rest.as_bytes();
        while end < rest.len() && bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        out.push((label, rest[op_at..=end.min(rest.len() - 1)].to_owned()));
        rest = rest[(end + 1).min(rest.len())..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    out
}

/// The series selectors of a PromQL expression: (metric name, label names of its matchers).
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    const WORDS: [&str; 12] = [
        "by",
        "without",
        "and",
        "or",
        "unless",
        "on",
        "ignoring",
        "offset",
        "bool",
        "group_left",
        "group_right",
        "inf",
    ];
    let ident = regex::Regex::new(r"[A-Za-z_:][A-Za-z0-9_:]*").expect("a regex");
    let grouping =
        regex::Regex::new(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
            .expect("a regex");
    let ranges = regex::Regex::new(r"\[[^\]]*\]").expect("a regex");
    let expr = grouping.replace_all(expr, "");
    let expr = ranges.replace_all(&expr, "");
    let mut out = Vec::new();
    let mut i = 0;
    let bytes = expr.as_bytes();
    while i < expr.len() {
        match bytes[i] {
            b'"' => {
                // A string literal outside a selector (e.g. histogram_quantile's none): skip.
                i += 1;
                while i < expr.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'{' => {
                // A selector without a name: `{__name__=...}`; not used here.
                panic!("a selector without a metric name in {expr}");
            }
            _ => {
                let Some(m) = ident.find_at(&expr, i).filter(|m| m.start() == i) else {
                    i += 1;
                    continue;
                };
                // Digits before a letter (`1e3`, `0.5`) are numbers, not names.
                if i > 0 && (bytes[i - 1].is_ascii_digit() || bytes[i - 1] == b'.') {
                    i = m.end();
                    continue;
                }
                let name = m.as_str().to_owned();
                let after = expr[m.end()..].trim_start();
                i = m.end();
                if after.starts_with('(') || WORDS.contains(&name.as_str()) {
                    continue;
                }
                let mut labels = Vec::new();
                if let Some(body) = after.strip_prefix('{') {
                    let close = body.find('}').expect("a closed selector");
                    labels = label_pairs(&body[..close])
                        .into_iter()
                        .map(|(l, _)| l)
                        .collect();
                    i = expr.len() - body.len() + close + 1;
                }
                out.push((name, labels));
            }
        }
    }
    out
}

#[tokio::test]
async fn every_metric_and_label_the_monitoring_files_name_is_exported_by_the_shield() {
    let exported = exported().await;
    assert!(
        exported.contains_key("joinshield_denials_total")
            && exported.contains_key("joinshield_upstream_latency_seconds_bucket"),
        "the scrape was read: {exported:?}"
    );
    // Series that Prometheus itself makes, with the labels it gives them.
    let prometheus: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::from([
        ("up", BTreeSet::from(["job", "instance"])),
        (
            "ALERTS",
            BTreeSet::from(["alertname", "alertstate", "severity"]),
        ),
    ]);
    let recorded: BTreeSet<String> = rules("deploy/prometheus/alerts.yml")
        .into_iter()
        .map(|(name, _)| name)
        .filter(|n| n.contains(':'))
        .collect();

    let d = dashboard();
    let mut queries: Vec<(String, String)> = dashboard_queries(&d)
        .into_iter()
        .map(|q| ("deploy/grafana/joinshield.json".to_owned(), q))
        .collect();
    for v in d["templating"]["list"].as_array().expect("variables") {
        if let Some(def) = v["definition"].as_str() {
            let inner = def
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(metric, _)| metric.to_owned())
                .unwrap_or_else(|| panic!("variable {}: not label_values(...): {def}", v["name"]));
            queries.push(("deploy/grafana/joinshield.json variable".to_owned(), inner));
        }
    }
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/dashboard.rules.yml",
    ] {
        for (_, e) in rules(file) {
            queries.push((file.to_owned(), e));
        }
    }
    let tests = yaml("deploy/prometheus/alerts.test.yml");
    for t in tests["tests"].as_array().expect("tests") {
        for s in t["input_series"].as_array().into_iter().flatten() {
            let series = s["series"].as_str().expect("a series").to_owned();
            queries.push(("deploy/prometheus/alerts.test.yml".to_owned(), series));
        }
        for p in t["promql_expr_test"].as_array().into_iter().flatten() {
            let expr = p["expr"].as_str().expect("an expr").to_owned();
            queries.push(("deploy/prometheus/alerts.test.yml".to_owned(), expr));
        }
    }

    let mut checked = 0;
    for (file, query) in &queries {
        let found = selectors(query);
        assert!(!found.is_empty(), "{file}: no series in {query}");
        for (name, labels) in found {
            checked += 1;
            if name.contains(':') {
                assert!(
                    recorded.contains(&name),
                    "{file}: {name} is recorded by no rule of alerts.yml"
                );
                continue;
            }
            let known: BTreeSet<&str> = match prometheus.get(name.as_str()) {
                Some(l) => l.clone(),
                None => exported
                    .get(&name)
                    .unwrap_or_else(|| panic!("{file}: the shield exports no {name} (in {query})"))
                    .iter()
                    .map(String::as_str)
                    // Prometheus adds these to every scraped series.
                    .chain(["job", "instance"])
                    .collect(),
            };
            for label in labels {
                assert!(
                    known.contains(label.as_str()),
                    "{file}: {name} has no label {label} (it has {known:?}; in {query})"
                );
            }
        }
    }
    assert!(checked > 60, "only {checked} selectors were checked");
}

#[test]
fn selectors_are_found_in_promql() {
    assert_eq!(
        selectors(
            r#"histogram_quantile(0.95, sum by (le, route) (rate(a_bucket{x=~"$r",y!="o"}[$__rate_interval]))) / on() b:c * 60 or vector(0)"#
        ),
        [
            ("a_bucket".to_owned(), vec!["x".to_owned(), "y".to_owned()]),
            ("b:c".to_owned(), vec![]),
        ]
    );
    assert_eq!(
        selectors(r#"up{job="joinshield"} == 0 or absent(up{job="a,b}"})"#),
        [
            ("up".to_owned(), vec!["job".to_owned()]),
            ("up".to_owned(), vec!["job".to_owned()]),
        ]
    );
}
