//! The documentation keeps up with the code: every flag of `roster run` (and its environment
//! variable) is in the README, and every value of the chart in the chart's README.

use std::path::Path;

use clap::Args as _;
use roster::config::RunConfig;
use serde_json::Value;

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)).expect(relative)
}

#[test]
fn every_flag_is_in_the_readme() {
    let readme = read("README.md");
    let command = RunConfig::augment_args(clap::Command::new("run"));
    let mut missing = Vec::new();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "help" {
            continue;
        }
        if !readme.contains(&format!("`--{long}`")) {
            missing.push(format!("--{long}"));
        }
        if let Some(env) = arg.get_env().and_then(|e| e.to_str())
            && !readme.contains(&format!("`{env}`"))
        {
            missing.push(env.to_owned());
        }
    }
    assert!(missing.is_empty(), "README.md does not document {missing:?}");
}

/// Dotted paths of the values: leaves, and maps or lists given as a whole (empty by default).
fn paths(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(fields) if !fields.is_empty() && !prefix.ends_with("resources") => {
            for (key, child) in fields {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                paths(&path, child, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[test]
fn every_chart_value_is_in_the_charts_readme() {
    let values: Value = serde_norway::from_str(&read("charts/roster/values.yaml")).expect("values.yaml");
    let readme = read("charts/roster/README.md");
    let mut all = Vec::new();
    paths("", &values, &mut all);
    let missing: Vec<&String> = all.iter().filter(|p| !readme.contains(&format!("`{p}`"))).collect();
    assert!(missing.is_empty(), "charts/roster/README.md does not document {missing:?}");
}
