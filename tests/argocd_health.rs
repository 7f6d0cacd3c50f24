//! The Argo CD health checks (`charts/roster/argocd/*.lua`) run in Lua 5.1 — the Lua Argo
//! CD embeds — against sample objects of every phase.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

const LUA: &str = "lua5.1";

/// The health check of `kind` (`user`, `userinvite`, `reset` for both resets).
fn script(kind: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("charts/roster/argocd/{kind}.lua"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A Lua table literal of a JSON value (`nil` for null, as Argo CD passes it).
fn lua(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua).collect::<Vec<_>>().join(", ")),
        Value::Object(fields) => {
            let fields: Vec<String> = fields.iter().map(|(k, v)| format!("[{k:?}] = {}", lua(v))).collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

/// Runs the health check of `kind` on `obj`: (status, message).
fn health(kind: &str, obj: &Value) -> (String, String) {
    let program = format!(
        "obj = {}\nlocal function check()\n{}\nend\nlocal hs = check()\nio.write(hs.status, \"\\t\", hs.message or \"\")",
        lua(obj),
        script(kind)
    );
    let output = Command::new(LUA)
        .arg("-e")
        .arg(&program)
        .output()
        .unwrap_or_else(|e| panic!("running {LUA} ({e}): run hack/install-test-tools.sh"));
    assert!(output.status.success(), "{kind}: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (status, message) = text.split_once('\t').unwrap_or((&text, ""));
    (status.to_owned(), message.to_owned())
}

fn condition(type_: &str, status: &str, reason: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": format!("{type_} {reason}")})
}

fn user(state: &str, phase: Option<&str>, conditions: Vec<Value>, observed: i64) -> Value {
    let mut obj = json!({"metadata": {"name": "jane", "generation": 2}, "spec": {"email": "j@example.com", "state": state}});
    if let Some(phase) = phase {
        obj["status"] = json!({"phase": phase, "observedGeneration": observed, "conditions": conditions});
    }
    obj
}

#[test]
fn users_map_to_healthy_progressing_suspended_and_degraded() {
    let ready = |status, reason| condition("Ready", status, reason);
    let stalled = |status, reason| condition("Stalled", status, reason);
    let cases = [
        ("no status yet", user("Active", None, vec![], 0), "Progressing"),
        (
            "an older generation",
            user("Active", Some("ACTIVE"), vec![ready("True", "Active")], 1),
            "Progressing",
        ),
        ("ACTIVE", user("Active", Some("ACTIVE"), vec![ready("True", "Active")], 2), "Healthy"),
        (
            "PENDING, delivered",
            user("Active", Some("PENDING"), vec![ready("True", "AwaitingUser")], 2),
            "Healthy",
        ),
        (
            "PENDING, expired link",
            user("Active", Some("PENDING"), vec![ready("True", "InviteExpired")], 2),
            "Healthy",
        ),
        (
            "NEW, delivering",
            user("Active", Some("NEW"), vec![ready("False", "InvitePending")], 2),
            "Progressing",
        ),
        (
            "duplicate email",
            user(
                "Active",
                Some("NEW"),
                vec![ready("False", "DuplicateEmail"), stalled("True", "DuplicateEmail")],
                2,
            ),
            "Degraded",
        ),
        (
            "locked out",
            user(
                "Active",
                Some("INACTIVE"),
                vec![ready("False", "LockedOut"), stalled("True", "LockedOut")],
                2,
            ),
            "Degraded",
        ),
        (
            "locked out for a while",
            user(
                "Active",
                Some("INACTIVE"),
                vec![ready("False", "LockedOut"), stalled("False", "NotStalled")],
                2,
            ),
            "Degraded",
        ),
        (
            "deactivated",
            user("Inactive", Some("INACTIVE"), vec![ready("True", "Deactivated")], 2),
            "Suspended",
        ),
        ("expired", user("Active", Some("INACTIVE"), vec![ready("True", "Expired")], 2), "Suspended"),
    ];
    for (name, obj, expected) in cases {
        let (status, message) = health("user", &obj);
        assert_eq!(status, expected, "{name}: {message}");
    }
    let (_, message) = health(
        "user",
        &user(
            "Active",
            Some("NEW"),
            vec![ready("False", "DuplicateEmail"), stalled("True", "DuplicateEmail")],
            2,
        ),
    );
    assert_eq!(message, "Ready DuplicateEmail", "the message is the Ready condition's");
}

#[test]
fn invites_and_resets_map_by_phase() {
    let invite = |phase: &str, conditions: Vec<Value>| json!({"metadata": {"generation": 1}, "status": {"phase": phase, "observedGeneration": 1, "conditions": conditions}});
    let ready = |status, reason| condition("Ready", status, reason);
    let cases = [
        ("Pending", vec![ready("False", "Delivering")], "Progressing"),
        ("Superseded", vec![ready("True", "Superseded")], "Healthy"),
        (
            "Failed",
            vec![ready("False", "AlreadyOnboarded"), condition("Stalled", "True", "AlreadyOnboarded")],
            "Degraded",
        ),
        (
            "Pending",
            vec![ready("False", "DuplicateEmail"), condition("Stalled", "True", "DuplicateEmail")],
            "Degraded",
        ),
        (
            "Pending",
            vec![ready("False", "SmtpNotConfigured"), condition("Stalled", "True", "SmtpNotConfigured")],
            "Degraded",
        ),
        ("Sent", vec![ready("True", "InviteSent")], "Healthy"),
        ("Accepted", vec![ready("True", "Accepted")], "Healthy"),
        ("Expired", vec![ready("True", "Expired")], "Healthy"),
        ("Revoked", vec![ready("True", "Revoked")], "Suspended"),
        (
            "Failed",
            vec![ready("False", "SmtpRejected"), condition("Stalled", "True", "SmtpRejected")],
            "Degraded",
        ),
    ];
    for (phase, conditions, expected) in cases {
        assert_eq!(health("userinvite", &invite(phase, conditions)).0, expected, "invite {phase}");
    }
    assert_eq!(health("userinvite", &json!({"metadata": {}})).0, "Progressing", "invite without status");

    for (phase, expected) in [("Pending", "Progressing"), ("Completed", "Healthy"), ("Failed", "Degraded")] {
        let reset =
            json!({"metadata": {}, "status": {"phase": phase, "conditions": [ready("True", "Reset")]}});
        assert_eq!(health("reset", &reset).0, expected, "reset {phase}");
    }
    assert_eq!(health("reset", &json!({"metadata": {}})).0, "Progressing", "reset without status");
}
