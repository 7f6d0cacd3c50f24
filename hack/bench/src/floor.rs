//! The floor: a client with no logic that makes, for each of N Users, only the writes
//! onboarding cannot avoid — the credentials Secret, the UserInvite, its token Secret, the
//! invite's and the User's status (the same conditions and fields roster writes, by
//! server-side apply as roster does), one Event — and sends one email, at roster's
//! concurrency. roster's onboarding time is reported as a multiple of this one.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Client, Resource, ResourceExt};
use lettre::message::{Mailbox as Address, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use roster::api::{User, UserInvite};
use roster::controller::events::Events;
use roster::credentials::Token;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::mailbox::Mailbox;

/// What the floor took.
#[derive(Clone, Debug, Serialize)]
pub struct Floor {
    /// Seconds from the first User's creation until every user's writes were made and
    /// Mailpit held N messages.
    pub total_s: f64,
    /// Workers making the writes.
    pub workers: usize,
    /// Write requests per user, beyond the User.
    pub writes_per_user: usize,
}

/// Writes per user the floor makes beyond the User: credentials Secret, UserInvite, token
/// Secret, invite status, User status, Event.
const WRITES_PER_USER: usize = 6;

/// Runs the floor for `n` Users in `namespace`.
pub async fn run(
    client: &Client,
    namespace: &str,
    n: usize,
    creators: usize,
    workers: usize,
    smtp_port: u16,
    mailbox: &Mailbox,
) -> anyhow::Result<Floor> {
    let smtp = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1").port(smtp_port).build();
    // roster's own publisher: kube's Recorder scans every Event it sent on each publish.
    let recorder = Events::new(client.clone(), Reporter { controller: "floor".into(), instance: None });
    let started = Instant::now();
    let (created, users) = mpsc::channel(creators * 4);
    let creation = crate::onboarding::create(client, namespace, n, creators, Some(created));
    let failures = std::sync::atomic::AtomicUsize::new(0);
    let onboarding = tokio_stream(users).for_each_concurrent(workers, |user| {
        let (client, smtp, recorder, failures) = (client.clone(), smtp.clone(), recorder.clone(), &failures);
        async move {
            if let Err(error) = onboard(&client, &smtp, &recorder, &user).await {
                eprintln!("floor: {}: {error:#}", user.name_any());
                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let (created, ()) = futures::join!(creation, onboarding);
    created?;
    let failed = failures.load(std::sync::atomic::Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "the floor failed for {failed} users: its time would mean nothing");
    mailbox.wait_for(n, Duration::from_secs(120)).await?;
    Ok(Floor { total_s: started.elapsed().as_secs_f64(), workers, writes_per_user: WRITES_PER_USER })
}

fn tokio_stream<T>(mut receiver: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

async fn onboard(
    client: &Client,
    smtp: &AsyncSmtpTransport<Tokio1Executor>,
    recorder: &Events,
    user: &User,
) -> anyhow::Result<()> {
    let namespace = user.namespace().unwrap_or_default();
    let name = user.name_any();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let invites: Api<UserInvite> = Api::namespaced(client.clone(), &namespace);
    let users: Api<User> = Api::namespaced(client.clone(), &namespace);
    let create = PostParams::default();

    let mut credentials: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{name}-credentials"), "labels": {"app.kubernetes.io/managed-by": "floor"}},
        "type": "roster.dev/credentials",
    }))?;
    credentials.metadata.owner_references = user.controller_owner_ref(&()).map(|r| vec![r]);

    let mut invite: UserInvite = serde_json::from_value(serde_json::json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "UserInvite",
        "metadata": {"name": format!("{name}-invite")},
        "spec": {"userRef": {"name": name}},
    }))?;
    invite.metadata.owner_references = user.controller_owner_ref(&()).map(|r| vec![r]);
    // Independent, so created together, as roster does.
    let (_, invite) = futures::try_join!(
        async { secrets.create(&create, &credentials).await.context("credentials Secret") },
        async { invites.create(&create, &invite).await.context("UserInvite") },
    )?;

    let token = Token::generate()?;
    let mut token_secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{name}-invite-token")},
        "type": "roster.dev/invite-token",
        "stringData": {"tokenHash": token.hash()},
    }))?;
    token_secret.metadata.owner_references = invite.controller_owner_ref(&()).map(|r| vec![r]);
    secrets.create(&create, &token_secret).await.context("token Secret")?;

    let link = format!("http://127.0.0.1/invite/{}", token.expose());
    let message = Message::builder()
        .from("Example Corp <no-reply@example.com>".parse::<Address>()?)
        .to(format!("{name}@example.com").parse::<Address>()?)
        .subject("You are invited to Example Corp")
        .multipart(MultiPart::alternative_plain_html(
            format!("Hello {name},\n\nSet up your account: {link}\n\nThe link expires in 30 days.\n"),
            format!("<p>Hello {name},</p><p><a href=\"{link}\">Set up your account</a></p><p>The link expires in 30 days.</p>"),
        ))?;
    smtp.send(message).await.context("sending")?;

    // The statuses roster writes, in shape and size, by server-side apply as roster does.
    let apply = PatchParams::apply("floor").force();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let generation = invite.metadata.generation;
    let sent = serde_json::json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "UserInvite",
        "status": {
            "phase": "Sent", "observedGeneration": generation, "observedResend": 0,
            "deliveryAttempts": 1, "lastAttemptAt": now, "sentAt": now, "expiresAt": now,
            "conditions": [
                condition("Ready", "True", "InviteSent", "waiting for the person to use the link", &now, generation),
                condition("Reconciling", "False", "Reconciled", "roster has done all it can for this generation", &now, generation),
                condition("Stalled", "False", "NotStalled", "nothing waits on an admin", &now, generation),
                condition("Delivered", "True", "EmailSent", "the invitation email was accepted by the SMTP server", &now, generation),
            ],
        }
    });
    invites.patch_status(&invite.name_any(), &apply, &Patch::Apply(&sent)).await.context("invite status")?;
    let generation = user.metadata.generation;
    let pending = serde_json::json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "User",
        "status": {
            "phase": "PENDING", "observedGeneration": generation,
            "credentialsSecretRef": {"name": format!("{name}-credentials")},
            "invite": {"name": invite.name_any(), "expiresAt": now},
            "failedLoginAttempts": 0,
            "conditions": [
                condition("Ready", "True", "AwaitingUser", "waiting for the person to finish onboarding", &now, generation),
                condition("Reconciling", "False", "Reconciled", "roster has done all it can for this generation", &now, generation),
                condition("Stalled", "False", "NotStalled", "nothing waits on an admin", &now, generation),
                condition("Invited", "True", "InviteSent", "an invitation link was delivered", &now, generation),
                condition("PasswordSet", "False", "PasswordNotSet", "no password set yet", &now, generation),
                condition("MfaEnrolled", "False", "NotEnrolled", "no authenticator enrolled yet", &now, generation),
                condition("EmailVerified", "False", "NotVerified", "no emailed link used yet", &now, generation),
            ],
        }
    });
    users.patch_status(&name, &apply, &Patch::Apply(&pending)).await.context("User status")?;

    let event = Event {
        type_: EventType::Normal,
        reason: "Invited".into(),
        note: Some("an invitation was delivered".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder.publish(&event, &user.object_ref(&())).await.context("Event")?;
    Ok(())
}

/// One status condition, as roster writes them.
fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
    generation: Option<i64>,
) -> serde_json::Value {
    serde_json::json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": now, "observedGeneration": generation,
    })
}
