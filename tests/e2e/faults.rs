//! Delivery when things go wrong, through the operator: an SMTP outage, a refusing server
//! and broken templates. These need an SMTP server and a template ConfigMap of their own, so
//! they run against a second control plane, Mailpit and operator, not the shared ones.

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use libtest_mimic::Trial;
use roster::api::{User, UserInvite};
use roster_testenv::Mailpit;
use serde_json::json;

use crate::batch::{Batch, SETTLE, size};
use crate::harness::{
    Ns, Operator, SMTP_SECRET, condition, plane_and_mailpit, poll_within, shared, standalone, wait_for,
};
use crate::invites::{messages_at, phase_of};
use crate::lifecycle::{email, phase, user_manifest};
use crate::mail::chaos;

/// The template ConfigMap the operator here is pointed at.
const TEMPLATES: &str = "email-templates";

pub fn trials() -> Vec<Trial> {
    vec![standalone("faults::outages_refusals_and_broken_templates", scenario)]
}

async fn scenario() -> anyhow::Result<()> {
    let dir = shared().work_dir.join("faults");
    let (plane, mailpit, client) = plane_and_mailpit(&dir, true, 500, &[]).await?;
    let templates: Api<ConfigMap> = Api::namespaced(client.clone(), SMTP_SECRET.0);
    set_templates(&templates, french()).await?;
    let flag = format!("--templates-configmap={}/{TEMPLATES}", SMTP_SECRET.0);
    let operator = Operator::start(plane.kubeconfig(), &dir, "operator", &[&flag]).await?;
    let ns = Ns::create(client, "faults").await?;
    let outcome = async {
        smtp_outage(&ns, &mailpit).await.context("SMTP outage")?;
        outage_mid_batch(&ns, &mailpit).await.context("SMTP outage mid-batch")?;
        smtp_refusal(&ns, &mailpit).await.context("SMTP refusal")?;
        broken_templates(&ns, &mailpit, &templates).await.context("broken templates")
    }
    .await;
    outcome.with_context(|| {
        let log = std::fs::read_to_string(operator.process.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- last lines of the operator's log ---\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    })
}

/// A 30 s outage in the middle of a batch: while it lasts, invites say so
/// (`Delivered=False`, SmtpUnavailable); afterwards every invite is delivered, each person
/// got exactly one email (a refused recipient is no message), nothing is orphaned.
async fn outage_mid_batch(ns: &Ns, mailpit: &Mailpit) -> anyhow::Result<()> {
    const OUTAGE: std::time::Duration = std::time::Duration::from_secs(30);
    let users = size("OUTAGE_USERS", 50);
    let batch = Batch::apply(ns, "batch", users).await?;
    poll_within("a fifth of the batch sent", SETTLE, || async { Ok(batch.sent(ns).await? >= users / 5) })
        .await?;
    chaos(mailpit, json!({"Recipient": {"ErrorCode": 451, "Probability": 100}})).await?;
    let started = std::time::Instant::now();
    let sent_at_outage = batch.sent(ns).await?;
    let invites = ns.api::<UserInvite>();
    poll_within("an invite showing the outage", OUTAGE, || async {
        let listed = invites.list(&Default::default()).await?;
        Ok(listed.iter().any(|i| delivered(i) == ("False", "SmtpUnavailable".into())))
    })
    .await?;
    let shown = started.elapsed();
    // The outage lasts its 30 s whatever happens meanwhile: a fault's length, not a wait.
    tokio::time::sleep(OUTAGE.saturating_sub(started.elapsed())).await;
    chaos(mailpit, json!({"Recipient": {"ErrorCode": 451, "Probability": 0}})).await?;
    let ended = std::time::Instant::now();
    let figures = batch.converged(ns, &mailpit.api_url).await?;
    println!(
        "SMTP outage: {users} users, 30 s of 451 from {sent_at_outage} sent, shown on an invite after \
         {shown:.1?}; all delivered {:.1?} after it ended: {} emails, {} duplicates",
        ended.elapsed(),
        figures.emails,
        figures.duplicates
    );
    ensure!(figures.duplicates == 0, "{} duplicate emails after an outage", figures.duplicates);
    Ok(())
}

/// 4xx replies: `Delivered=False` (SmtpUnavailable), the user NEW; once the server accepts
/// again, delivered, and exactly one message arrived.
async fn smtp_outage(ns: &Ns, mailpit: &Mailpit) -> anyhow::Result<()> {
    chaos(mailpit, json!({"Recipient": {"ErrorCode": 451, "Probability": 100}})).await?;
    let address = email("outage", ns);
    ns.apply(user_manifest("outage", json!({"email": address}), json!({}))).await?;
    let invites = ns.api::<UserInvite>();
    let failing = wait_for(&invites, "outage-invite", "told delivery failed", |i| {
        delivered(i) == ("False", "SmtpUnavailable".into())
    })
    .await?;
    ensure!(phase_of(&failing) == "Pending", "{:?}", failing.status);
    let user = ns.raw::<User>().get("outage").await?;
    ensure!(phase(&user) == "NEW", "the user is not NEW while delivery fails: {}", user.data["status"]);

    chaos(mailpit, json!({"Recipient": {"ErrorCode": 451, "Probability": 0}})).await?;
    let sent = wait_for(&invites, "outage-invite", "Sent", |i| phase_of(i) == "Sent").await?;
    let attempts = sent.status.and_then(|s| s.delivery_attempts).unwrap_or_default();
    ensure!(attempts >= 2, "delivered without a retry ({attempts} attempts)");
    let received = messages_at(&mailpit.api_url, &address).await?.len();
    ensure!(received == 1, "expected exactly one message after the outage, found {received}");
    wait_for(&ns.raw::<User>(), "outage", "PENDING", |u| phase(u) == "PENDING").await?;
    Ok(())
}

/// A 5xx reply: Failed, Stalled with the reply, not retried; the user stays NEW.
async fn smtp_refusal(ns: &Ns, mailpit: &Mailpit) -> anyhow::Result<()> {
    chaos(mailpit, json!({"Recipient": {"ErrorCode": 550, "Probability": 100}})).await?;
    let address = email("refused", ns);
    ns.apply(user_manifest("refused", json!({"email": address}), json!({}))).await?;
    let invites = ns.raw::<UserInvite>();
    let failed =
        wait_for(&invites, "refused-invite", "Failed", |i| i.data["status"]["phase"] == "Failed").await?;
    chaos(mailpit, json!({"Recipient": {"ErrorCode": 550, "Probability": 0}})).await?;
    let stalled = condition(&failed, "Stalled");
    ensure!(stalled["status"] == "True" && stalled["reason"] == "SmtpRejected", "{stalled}");
    let message = condition(&failed, "Delivered")["message"].as_str().unwrap_or_default().to_owned();
    ensure!(message.contains("550"), "the condition does not carry the SMTP reply: {message}");
    ensure!(!message.contains(crate::harness::SMTP_PASSWORD), "the SMTP password is in the status");
    ensure!(failed.data["status"]["deliveryAttempts"] == 1, "{}", failed.data["status"]);
    // The User's status may be written a moment after its invite's.
    wait_for(&ns.raw::<User>(), "refused", "NEW", |u| phase(u) == "NEW").await?;
    Ok(())
}

/// A template that does not parse: Pending, Stalled (TemplateInvalid) naming the template;
/// fixed in the ConfigMap → delivered with the override, no restart.
async fn broken_templates(ns: &Ns, mailpit: &Mailpit, templates: &Api<ConfigMap>) -> anyhow::Result<()> {
    let mut broken = french();
    broken["invitation.fr.subject.txt"] = json!("Bienvenue chez {{ org ");
    set_templates(templates, broken).await?;
    let address = email("francoise", ns);
    ns.apply(user_manifest("francoise", json!({"email": address, "locale": "fr-CA"}), json!({}))).await?;
    let invites = ns.raw::<UserInvite>();
    let stuck = wait_for(&invites, "francoise-invite", "stalled on the template", |i| {
        condition(i, "Stalled")["reason"] == "TemplateInvalid"
    })
    .await?;
    let message = condition(&stuck, "Delivered")["message"].as_str().unwrap_or_default().to_owned();
    ensure!(message.contains("invitation.fr.subject.txt"), "the broken template is not named: {message}");
    ensure!(messages_at(&mailpit.api_url, &address).await?.is_empty(), "sent despite broken templates");

    set_templates(templates, french()).await?;
    wait_for(&invites, "francoise-invite", "Sent", |i| i.data["status"]["phase"] == "Sent").await?;
    let messages = messages_at(&mailpit.api_url, &address).await?;
    ensure!(messages.len() == 1, "expected one message, found {}", messages.len());
    let subject = messages[0]["Subject"].as_str().unwrap_or_default();
    ensure!(subject == "Bienvenue chez Example Corp", "the override was not used: {subject}");
    Ok(())
}

/// French invitation templates, a language roster does not ship.
fn french() -> serde_json::Value {
    json!({
        "invitation.fr.subject.txt": "Bienvenue chez {{ org }}",
        "invitation.fr.body.txt": "Bonjour {{ name }}, votre lien : {{ link }} (valable jusqu'au {{ expires }})",
        "invitation.fr.body.html": "<p>Bonjour {{ name }}, <a href=\"{{ link }}\">votre lien</a></p>",
    })
}

async fn set_templates(api: &Api<ConfigMap>, data: serde_json::Value) -> anyhow::Result<()> {
    let map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": TEMPLATES}, "data": data});
    api.patch(TEMPLATES, &PatchParams::apply("e2e").force(), &Patch::Apply(&map)).await?;
    Ok(())
}

/// Status and reason of an invite's `Delivered` condition.
fn delivered(invite: &UserInvite) -> (&str, String) {
    let found = invite.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Delivered"));
    found.map_or(("", String::new()), |c| (c.status.as_str(), c.reason.clone()))
}
