//! The cluster itself failing under the operator, mid-batch: kube-apiserver killed and
//! started again on the same port, and etcd frozen long enough for writes to time out. The
//! operator is never restarted: it must find its way back, converge with nothing lost or
//! doubled, retry with backoff rather than in a loop, and meanwhile answer a person whose
//! change cannot be saved with 503 — not 500, and never a success. Each has its own
//! control plane and Mailpit; `ROSTER_RESTART_USERS` and `ROSTER_FREEZE_USERS` change the
//! batch sizes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::ensure;
use libtest_mimic::Trial;
use serde_json::{Value, json};

use crate::batch::{Batch, SETTLE, random_between, size};
use crate::harness::{
    Ns, Operator, SMTP_SECRET, condition, plane_and_mailpit, poll_within, shared, standalone, wait_for,
};
use crate::leader::wait_leading;
use crate::lifecycle::email;
use crate::portal::{PASSWORD, linked_user, onboard_at};
use roster::api::User;

/// The Lease of the restart test's operator, and how long it stands: short, so the outage
/// outlasts the leader's term.
const LEASE_SECONDS: u64 = 6;
/// The operators' `--lockout-threshold` (its default).
const LOCKOUT_THRESHOLD: usize = 5;
/// kube-apiserver's `--request-timeout` in the etcd test: a write waiting on a frozen etcd
/// fails with 504 after this, instead of the default minute.
const REQUEST_TIMEOUT: &str = "4s";

pub fn trials() -> Vec<Trial> {
    vec![
        standalone(
            "outages::api_server_restarted_mid_batch_is_survived_without_a_restart",
            api_server_restart,
        ),
        standalone("outages::etcd_frozen_mid_batch_is_retried_with_backoff", etcd_freeze),
    ]
}

async fn api_server_restart() -> anyhow::Result<()> {
    let users = size("RESTART_USERS", 100);
    let dir = shared().work_dir.join("apiserver-restart");
    let (mut plane, mailpit, client) = plane_and_mailpit(&dir, false, users * 3, &[]).await?;
    // With leader election, as the chart runs it: the outage ends the leader's term.
    let lease_flag = format!("--leader-election-lease={}/roster", SMTP_SECRET.0);
    let duration_flag = format!("--leader-election-lease-duration={LEASE_SECONDS}s");
    let flags = [lease_flag.as_str(), duration_flag.as_str(), "--concurrency=1"];
    let mut operator = Operator::start(plane.kubeconfig(), &dir, "operator", &flags).await?;
    wait_leading(&operator, Duration::from_secs(LEASE_SECONDS * 3)).await?;

    let ns = Ns::create(client, "restart").await?;
    let people = People::ready(&operator, &ns, "rita", "wade").await?;
    let guessed = email("gus", &ns);
    onboard_at(&operator.portal_url, &ns, "gus", json!({"mfa": {"required": false}})).await?;
    let batch = Batch::apply(&ns, "a", users).await?;
    poll_within("a fifth of the invites sent", SETTLE, || async { Ok(batch.sent(&ns).await? >= users / 5) })
        .await?;
    // When the fault strikes: a random moment, not a synchronisation.
    tokio::time::sleep(random_between(Duration::ZERO, Duration::from_millis(500))).await;
    let sent_at_kill = batch.sent(&ns).await?;

    let before = Counts::of(&operator).await?;
    plane.stop_api_server();
    // Someone guesses gus's password meanwhile: the failures cannot be written, yet they
    // count, and the right password then gets the same answer as the wrong ones.
    let mut guesses = Vec::new();
    for n in 0..=LOCKOUT_THRESHOLD {
        let password = if n == LOCKOUT_THRESHOLD { PASSWORD.to_owned() } else { format!("guess-{n}") };
        guesses.push(
            people.post(&operator, "/api/v1/login", json!({"email": guessed, "password": password})).await?.0,
        );
    }
    // Longer than the term (two thirds of the lease): leadership is lost and must be regained.
    let outage = random_between(Duration::from_secs(LEASE_SECONDS), Duration::from_secs(LEASE_SECONDS * 2));
    let answers = people.try_while_down(&operator, outage).await;
    let during = Counts::of(&operator).await?.since(&before);
    let down_for = before.at.elapsed();
    plane.start_api_server().await?;
    let restarted = Instant::now();
    wait_leading(&operator, Duration::from_secs(LEASE_SECONDS * 3)).await?;
    let led_again = restarted.elapsed();
    let figures = batch.converged(&ns, &mailpit.api_url).await?;
    let converged = restarted.elapsed();
    operator.process.check_running()?;
    let log = std::fs::read_to_string(operator.process.log())?;
    let terms = log.matches("became the leader").count();

    println!(
        "API server restart: {users} users, killed with {sent_at_kill} invites sent, down {outage:.1?}; \
         the operator led again {led_again:.1?} after the restart and the batch converged after \
         {converged:.1?}: {} emails, {} duplicates; terms led: {terms}; answers while down: {answers:?}",
        figures.emails, figures.duplicates
    );
    ensure!(
        log.contains("stopped leading") && terms >= 2,
        "the outage did not end the leader's term and start another ({terms} terms)"
    );
    ensure!(
        sent_at_kill < users,
        "the API server was killed after the batch had finished: nothing was tested"
    );
    // Refused connections fail a reconcile in a moment: only backoff (and the end of the
    // term) keeps the count down.
    let bound = backoff_bound(users, down_for);
    println!(
        "reconciles while the API server was down: {} ({} failed; bound {bound})",
        during.reconciles, during.failures
    );
    ensure!(
        during.reconciles <= bound,
        "{} reconciles in {down_for:?} without an API server: a retry loop",
        during.reconciles
    );
    answers.all_unavailable()?;
    ensure!(
        guesses.iter().all(|status| *status == 401),
        "{LOCKOUT_THRESHOLD} wrong passwords then the right one while failures could not be written: {guesses:?}"
    );
    // Not lost: written once the API server is back, they lock gus.
    wait_for(&ns.raw::<User>(), "gus", "locked out", |u| condition(u, "Ready")["reason"] == "LockedOut")
        .await?;
    ensure!(figures.duplicates <= 1, "{} duplicate emails after one API server restart", figures.duplicates);
    people.succeed_after(&operator).await?;
    Ok(())
}

async fn etcd_freeze() -> anyhow::Result<()> {
    let users = size("FREEZE_USERS", 60);
    let dir = shared().work_dir.join("etcd-freeze");
    let timeout = format!("--request-timeout={REQUEST_TIMEOUT}");
    let (plane, mailpit, client) = plane_and_mailpit(&dir, false, users * 3, &[timeout]).await?;
    // One replica without election (as the demo runs): nothing but backoff paces it.
    let operator = Operator::start(plane.kubeconfig(), &dir, "operator", &[]).await?;
    let ns = Ns::create(client, "freeze").await?;
    let people = People::ready(&operator, &ns, "finn", "gwen").await?;
    let batch = Batch::apply(&ns, "f", users).await?;
    poll_within("a fifth of the invites sent", SETTLE, || async { Ok(batch.sent(&ns).await? >= users / 5) })
        .await?;
    let sent_at_freeze = batch.sent(&ns).await?;

    let before = Counts::of(&operator).await?;
    ensure!(plane.freeze_etcd(), "SIGSTOP was not delivered to etcd");
    let frozen = Instant::now();
    // The fixed time the reconciles are counted over; the people try meanwhile.
    let window = Duration::from_secs(20);
    let answers = people.try_while_down(&operator, window).await;
    let during = Counts::of(&operator).await?.since(&before);
    let counted_over = before.at.elapsed();
    ensure!(plane.thaw_etcd(), "SIGCONT was not delivered to etcd");
    let frozen_for = frozen.elapsed();
    let figures = batch.converged(&ns, &mailpit.api_url).await?;

    // Each write waits out the request timeout before it fails, which alone slows a retry
    // loop; the bound still catches one that ignores the backoff once writes fail faster.
    let bound = backoff_bound(users, counted_over);
    println!(
        "etcd frozen {frozen_for:.1?} (writes time out after {REQUEST_TIMEOUT}) with {sent_at_freeze} of \
         {users} invites sent: {} reconciles ({} failed) in {counted_over:.1?} (bound {bound}); \
         converged: {} emails, {} duplicates; answers while frozen: {answers:?}",
        during.reconciles, during.failures, figures.emails, figures.duplicates
    );
    ensure!(sent_at_freeze < users, "etcd was frozen after the batch had finished: nothing was tested");
    // What shows the writes failed is the people's 503s (below): a reconcile is counted
    // when it ends, and kube's client retries a 504 three times, so one caught by the freeze
    // may end only after the thaw, and then succeed.
    ensure!(
        during.reconciles <= bound,
        "{} reconciles in {counted_over:?}: a retry loop without backoff",
        during.reconciles
    );
    answers.all_unavailable()?;
    ensure!(figures.duplicates <= 1, "{} duplicate emails around one etcd freeze", figures.duplicates);
    people.succeed_after(&operator).await?;
    Ok(())
}

/// Two people who try to change something while the cluster cannot take writes: one
/// onboarded (signs in: a success is written before it is answered), one holding an unused
/// invite link (sets a password with it).
struct People {
    signs_in: String,
    holds_link: String,
    link: String,
    /// Gives up on an answer after [`PATIENCE`]: a hang fails the test.
    http: reqwest::Client,
}

/// How long a person waits for an answer.
const PATIENCE: Duration = Duration::from_secs(15);

impl People {
    async fn ready(operator: &Operator, ns: &Ns, signs_in: &str, holds_link: &str) -> anyhow::Result<Self> {
        let no_mfa = json!({"mfa": {"required": false}});
        onboard_at(&operator.portal_url, ns, signs_in, no_mfa.clone()).await?;
        let link = linked_user(ns, holds_link, no_mfa).await?;
        let http = reqwest::Client::builder().timeout(PATIENCE).build()?;
        Ok(Self { signs_in: email(signs_in, ns), holds_link: email(holds_link, ns), link, http })
    }

    /// Tries both changes again and again for `outage`, counting the answers per change.
    async fn try_while_down(&self, operator: &Operator, outage: Duration) -> Answers {
        let mut answers = Answers::default();
        let until = Instant::now() + outage;
        while Instant::now() < until {
            answers.note("sign-in", self.sign_in(operator, &self.signs_in).await);
            answers.note("set password", self.set_password(operator).await);
            tokio::time::sleep(Duration::from_millis(200)).await; // pacing, not synchronisation
        }
        answers
    }

    /// Afterwards both sign in with their password: nothing was half-written while the
    /// cluster was away. A write that timed out may have landed once etcd was back (the
    /// person was told it could not be saved, not that nothing changed): the link is then
    /// used, by that very password.
    async fn succeed_after(&self, operator: &Operator) -> anyhow::Result<()> {
        let (status, body) = self.set_password(operator).await?;
        ensure!(
            status == 200 || (status == 410 && body["error"] == "used"),
            "the link after the outage: {status} {body}"
        );
        for person in [&self.signs_in, &self.holds_link] {
            poll_within(&format!("{person} signing in after the outage"), SETTLE, || async {
                Ok(self.sign_in(operator, person).await?.0 == 200)
            })
            .await?;
        }
        Ok(())
    }

    async fn sign_in(&self, operator: &Operator, person: &str) -> anyhow::Result<(u16, Value)> {
        self.post(operator, "/api/v1/login", json!({"email": person, "password": PASSWORD})).await
    }

    async fn set_password(&self, operator: &Operator) -> anyhow::Result<(u16, Value)> {
        let path = format!("/api/v1/invites/{}/accept", self.link);
        self.post(operator, &path, json!({"password": PASSWORD})).await
    }

    async fn post(&self, operator: &Operator, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        let response = self.http.post(format!("{}{path}", operator.portal_url)).json(&body).send().await?;
        Ok((response.status().as_u16(), response.json().await.unwrap_or_default()))
    }
}

/// The answers to each change while the cluster was away: status (or "no answer") → count.
#[derive(Debug, Default)]
struct Answers(BTreeMap<&'static str, BTreeMap<String, usize>>);

impl Answers {
    fn note(&mut self, change: &'static str, answer: anyhow::Result<(u16, Value)>) {
        let key = match answer {
            Ok((status, body)) => format!("{status} {}", body["error"].as_str().unwrap_or_default()),
            Err(e) => format!("no answer: {e}"),
        };
        *self.0.entry(change).or_default().entry(key).or_default() += 1;
    }

    /// Every answer was 503 "unavailable": no 500, no stale success, no hang.
    fn all_unavailable(&self) -> anyhow::Result<()> {
        ensure!(self.0.len() == 2, "not both changes were tried: {self:?}");
        for (change, answers) in &self.0 {
            let other: Vec<_> = answers.keys().filter(|k| *k != "503 unavailable").collect();
            ensure!(other.is_empty(), "{change} answered {other:?} while nothing could be written");
        }
        Ok(())
    }
}

/// How many reconciles `users` people (a User and an invite each, and the two who try) may
/// take over `window` while every write fails: each object's retries wait 1, 2, 4, 8 … s,
/// so it is tried at most about log2(window) + 2 times.
fn backoff_bound(users: usize, window: Duration) -> u64 {
    let objects = u64::try_from(users * 2 + 4).unwrap_or(u64::MAX);
    objects * (u64::from(window.as_secs().max(1).ilog2()) + 2)
}

/// The operator's reconcile counters, and when they were read.
struct Counts {
    reconciles: u64,
    failures: u64,
    at: Instant,
}

impl Counts {
    async fn of(operator: &Operator) -> anyhow::Result<Self> {
        Ok(Self {
            reconciles: operator.metric("roster_reconciles_total").await?,
            failures: operator.metric("roster_reconcile_failures_total").await?,
            at: Instant::now(),
        })
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            reconciles: self.reconciles.saturating_sub(before.reconciles),
            failures: self.failures.saturating_sub(before.failures),
            at: self.at,
        }
    }
}
