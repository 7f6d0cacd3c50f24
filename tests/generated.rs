//! Files derived from others stay in step (`hack/generate.sh` rewrites them): the chart's
//! CRDs are `crds/roster.yaml` plus the keep annotation, and the Argo CD example carries the
//! chart's Lua health checks. (`crds/` against the code is a unit test; `deploy/` against
//! the chart needs Helm and is checked in the e2e chart test.)

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)).expect(relative)
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml).map(|d| Value::deserialize(d).expect("YAML")).collect()
}

#[test]
fn the_charts_crds_are_crds_roster_yaml_kept_on_uninstall() {
    let template = read("charts/roster/templates/crds.yaml");
    let lines: Vec<&str> = template.lines().collect();
    assert_eq!(lines.first(), Some(&"{{- if .Values.crds.enabled }}"), "run hack/generate.sh");
    assert_eq!(lines.last(), Some(&"{{- end }}"), "run hack/generate.sh");
    let mut chart = documents(&lines[1..lines.len() - 1].join("\n"));
    for crd in &mut chart {
        let annotations = crd["metadata"]["annotations"].as_object_mut().expect("annotations");
        assert_eq!(annotations.remove("helm.sh/resource-policy"), Some("keep".into()));
        if annotations.is_empty() {
            crd["metadata"].as_object_mut().expect("metadata").remove("annotations");
        }
    }
    assert_eq!(
        chart,
        documents(&read("crds/roster.yaml")),
        "the chart's CRDs are stale: run hack/generate.sh"
    );
}

#[test]
fn the_argocd_example_carries_the_charts_scripts() {
    let config: Value = serde_norway::from_str(&read("examples/argocd/argocd-cm.yaml")).expect("YAML");
    let kinds =
        [("User", "user"), ("UserInvite", "userinvite"), ("MfaReset", "reset"), ("PasswordReset", "reset")];
    for (kind, file) in kinds {
        let key = format!("resource.customizations.health.roster.dev_{kind}");
        assert_eq!(
            config["data"][&key].as_str(),
            Some(read(&format!("charts/roster/argocd/{file}.lua")).as_str()),
            "{key} differs from charts/roster/argocd/{file}.lua: run hack/generate.sh"
        );
    }
}
