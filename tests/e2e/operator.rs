//! `roster run` against the real control plane: it records each generation it sees, serves
//! health and metrics, refuses bad flags, and stops cleanly on SIGTERM.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use kube::api::{Patch, PatchParams};
use libtest_mimic::Trial;
use roster::api::{MfaReset, User, UserInvite};
use serde_json::json;

use crate::harness::{Ns, Operator, is_reconciled, poll_until, shared, trial, wait_for};

pub fn trials() -> Vec<Trial> {
    vec![
        trial("operator::records_each_generation", |ns| async move {
            let user = json!({"apiVersion": "roster.dev/v1alpha1", "kind": "User", "metadata": {"name": "jane"},
                "spec": {"email": "jane@example.com", "invite": {"policy": "Manual"}}});
            ns.apply(user).await?;
            let api = ns.raw::<User>();
            let first = wait_for(&api, "jane", "reconciled", is_reconciled).await?;
            let ready_since = ready_transition(&first);

            let change = json!({"spec": {"displayName": "Jane Doe"}});
            api.patch("jane", &PatchParams::default(), &Patch::Merge(&change)).await?;
            let second = wait_for(&api, "jane", "generation 2 reconciled", |o| {
                o.metadata.generation == Some(2) && is_reconciled(o)
            })
            .await?;
            ensure!(
                ready_transition(&second) == ready_since,
                "Ready's lastTransitionTime moved although its status did not flip"
            );
            Ok(())
        }),
        trial("operator::serves_health_and_metrics", |ns| async move {
            let base = &shared().operator_url;
            for path in ["/healthz", "/readyz"] {
                let response = reqwest::get(format!("{base}{path}")).await?;
                ensure!(response.status() == 200, "{path} answered {}", response.status());
            }
            for (kind, api, spec) in [
                ("User", ns.raw::<User>(), json!({"email": "m@example.com"})),
                ("UserInvite", ns.raw::<UserInvite>(), json!({"userRef": {"name": "m"}})),
                ("MfaReset", ns.raw::<MfaReset>(), json!({"userRef": {"name": "m"}, "reason": "test"})),
            ] {
                ns.apply(json!({"apiVersion": "roster.dev/v1alpha1", "kind": kind, "metadata": {"name": "m"}, "spec": spec}))
                    .await?;
                wait_for(&api, "m", "reconciled", is_reconciled).await?;
            }
            // A reconcile is counted when it returns, a moment after its status write.
            let needles: Vec<String> = ["user", "userinvite", "mfareset"]
                .iter()
                .flat_map(|controller| {
                    [
                        format!("roster_reconciles_total{{controller=\"{controller}\"}}"),
                        format!("roster_reconcile_duration_seconds_count{{controller=\"{controller}\"}}"),
                    ]
                })
                .collect();
            poll_until("/metrics counts every controller", || async {
                let metrics = reqwest::get(format!("{base}/metrics")).await?.text().await?;
                Ok(needles.iter().all(|needle| metrics.contains(needle)))
            })
            .await
        }),
        trial("operator::watches_only_the_namespaces_it_is_given", |ns| async move {
            // Link invites in three namespaces, delivered by the shared operator; a second
            // operator watching two of them knows exactly those links.
            let mut tokens = vec![crate::portal::linked_user(&ns, "watched-a", json!({})).await?];
            let mut extra = Vec::new();
            for suffix in ["b", "c"] {
                let other = Ns::create(ns.client.clone(), &format!("watched-{suffix}")).await?;
                tokens
                    .push(crate::portal::linked_user(&other, &format!("watched-{suffix}"), json!({})).await?);
                extra.push(other);
            }
            let dir = shared().work_dir.join(&ns.name);
            std::fs::create_dir_all(&dir)?;
            let watch = format!("--watch-namespaces={},{}", ns.name, extra[0].name);
            let operator =
                Operator::start(&shared().kubeconfig, &dir, "operator-two-namespaces", &[&watch]).await?;
            let mut answers = Vec::new();
            for token in &tokens {
                let url = format!("{}/api/v1/invites/{token}", operator.portal_url);
                answers.push(reqwest::get(url).await?.status().as_u16());
            }
            for other in extra {
                other.delete().await;
            }
            ensure!(answers == [200, 200, 404], "answers for namespaces a, b, c: {answers:?}");
            Ok(())
        }),
        trial("operator::stops_cleanly_on_sigterm_with_json_logs", |ns| async move {
            let dir = shared().work_dir.join(&ns.name);
            std::fs::create_dir_all(&dir)?;
            let watch = format!("--watch-namespaces={}", ns.name);
            let mut operator =
                Operator::start(&shared().kubeconfig, &dir, "operator", &[&watch, "--log-format=json"])
                    .await?;
            let pid = operator.process.id().to_string();
            ensure!(
                Command::new("kill").args(["-TERM", &pid]).status()?.success(),
                "kill -TERM {pid} failed"
            );
            let status = operator
                .process
                .wait_timeout(Duration::from_secs(20))
                .context("roster run still running 20s after SIGTERM")?;
            ensure!(status.success(), "roster run exited with {status} after SIGTERM");
            let log = std::fs::read_to_string(operator.process.log())?;
            let lines = log
                .lines()
                .map(serde_json::from_str::<serde_json::Value>)
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("--log-format=json wrote a line that is not JSON:\n{log}"))?;
            ensure!(
                lines.iter().any(|l| l["message"] == "controllers stopped"),
                "no clean-stop line in the log:\n{log}"
            );
            Ok(())
        }),
        trial("operator::refuses_bad_flags", |_ns| async move {
            for (args, named) in [
                (&["run", "--concurrency", "0"][..], "--concurrency"),
                (&["run", "--lockout-threshold", "0"][..], "--lockout-threshold"),
                (&["run", "--password-min-length", "6"][..], "--password-min-length"),
                (&["run", "--argon2-memory-kib", "1"][..], "argon2"),
            ] {
                let output = Command::new(env!("CARGO_BIN_EXE_roster"))
                    .args(args)
                    .env("KUBECONFIG", &shared().kubeconfig)
                    .env("ROSTER_METRICS_ADDR", "127.0.0.1:0")
                    .output()?;
                ensure!(!output.status.success(), "roster {args:?} was accepted");
                let stderr = String::from_utf8_lossy(&output.stderr);
                ensure!(stderr.contains(named), "the error for {args:?} does not name {named}: {stderr}");
            }
            Ok(())
        }),
    ]
}

fn ready_transition(object: &kube::core::DynamicObject) -> Option<String> {
    object.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_owned))
}
