//! Two replicas with leader election on a Lease: exactly one reconciles; the leader killed
//! mid-batch (SIGKILL) is replaced within the lease duration, the batch completes with at
//! most one duplicate email, and sign-in through the surviving replica keeps answering
//! throughout; a leader stopped with SIGTERM releases the Lease and the other takes over in
//! about a retry period, not a lease. Its own control plane and Mailpit; a 6 s lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::ensure;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use libtest_mimic::Trial;
use roster::leader::Timing;
use serde_json::json;

use crate::batch::{Batch, SETTLE, random_between, size};
use crate::harness::{
    Ns, Operator, POLL_INTERVAL, SMTP_SECRET, plane_and_mailpit, poll_within, shared, standalone,
};
use crate::lifecycle::email;
use crate::portal::{PASSWORD, onboard_at};

/// The Lease the replicas share, and how long it stands.
const LEASE: &str = "roster";
const LEASE_SECONDS: u64 = 6;

pub fn trials() -> Vec<Trial> {
    vec![standalone("leader::one_of_two_replicas_leads_and_hands_over_on_kill_and_on_sigterm", scenario)]
}

async fn scenario() -> anyhow::Result<()> {
    let users = size("LEADER_USERS", 100);
    let dir = shared().work_dir.join("leader");
    let (plane, mailpit, client) = plane_and_mailpit(&dir, false, users * 3, &[]).await?;
    let lease_flag = format!("--leader-election-lease={}/{LEASE}", SMTP_SECRET.0);
    let duration_flag = format!("--leader-election-lease-duration={LEASE_SECONDS}s");
    // One reconcile at a time: at most one delivery in flight when the leader dies.
    let flags = [lease_flag.as_str(), duration_flag.as_str(), "--concurrency=1"];
    let start = |name: &'static str| Operator::start(plane.kubeconfig(), &dir, name, &flags);
    let mut replicas = vec![start("operator-a").await?, start("operator-b").await?];

    // Exactly one leads, and the Lease names it.
    let leader = sole_leader(&replicas).await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), SMTP_SECRET.0);
    let holder = leases.get(LEASE).await?.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    ensure!(!holder.is_empty(), "the Lease has no holder while replica {leader} leads");
    let survivor = 1 - leader;

    // A person who signs in through the survivor all along; onboarded through it too.
    let ns = Ns::create(client.clone(), "leader").await?;
    onboard_at(&replicas[survivor].portal_url, &ns, "steady", json!({"mfa": {"required": false}})).await?;
    let probe = Probe::start(&replicas[survivor].portal_url, email("steady", &ns));

    let batch = Batch::apply(&ns, "q", users).await?;
    // Mid-delivery: once a fifth of the invites went out, at a random moment after.
    poll_within("a fifth of the invites sent", SETTLE, || async { Ok(batch.sent(&ns).await? >= users / 5) })
        .await?;
    tokio::time::sleep(random_between(Duration::ZERO, Duration::from_millis(500))).await;
    let sent_at_kill = batch.sent(&ns).await?;
    ensure!(reconciles(&replicas[survivor]).await? == 0, "the follower reconciled while the other led");
    let killed = Instant::now();
    replicas[leader].process.kill();
    wait_leading(&replicas[survivor], Duration::from_secs(LEASE_SECONDS * 3)).await?;
    let take_over = killed.elapsed();
    let figures = batch.converged(&ns, &mailpit.api_url).await?;
    let (answered, failed) = probe.stop().await;
    println!(
        "leader loss: {users} users, leader SIGKILLed with {sent_at_kill} invites sent; the other \
         replica led {take_over:.1?} later (lease {LEASE_SECONDS}s); converged: {} emails, {} \
         duplicates; sign-ins through the survivor: {answered} succeeded, {failed} failed",
        figures.emails, figures.duplicates
    );
    ensure!(sent_at_kill < users, "the leader was killed after the batch had finished: nothing was tested");
    // Taken over once the Lease has stood unchanged for its duration on the follower's
    // clock: not before the lease less one retry period (the last renewal came at most that
    // long before the kill), not much after the lease and two retry periods.
    let Timing { lease, retry, .. } = Timing::for_lease(Duration::from_secs(LEASE_SECONDS));
    ensure!(
        take_over >= lease - retry - Duration::from_millis(200)
            && take_over <= lease + retry * 2 + Duration::from_secs(1),
        "took {take_over:?} to take over a {LEASE_SECONDS}s lease"
    );
    ensure!(figures.duplicates <= 1, "{} duplicate emails after one kill", figures.duplicates);
    ensure!(
        failed == 0 && answered > 0,
        "{failed} sign-ins failed ({answered} succeeded) during the leader loss"
    );

    // Graceful: the restarted replica follows; the leader, sent SIGTERM, releases the Lease.
    replicas[leader] = start(if leader == 0 { "operator-a-again" } else { "operator-b-again" }).await?;
    let terminated = Instant::now();
    replicas[survivor].process.terminate();
    wait_leading(&replicas[leader], Duration::from_secs(LEASE_SECONDS * 3)).await?;
    let hand_over = terminated.elapsed();
    let status = replicas[survivor].process.wait_timeout(Duration::from_secs(30));
    println!("hand-over: SIGTERM to the leader, the other led {hand_over:.1?} later");
    ensure!(status.is_some_and(|s| s.success()), "the leader did not exit cleanly on SIGTERM: {status:?}");
    let log = std::fs::read_to_string(replicas[survivor].process.log())?;
    ensure!(log.contains("released the Lease"), "the leader did not release its Lease");
    ensure!(
        hand_over < Duration::from_secs(LEASE_SECONDS / 2),
        "a released Lease took {hand_over:?} to be taken over (lease {LEASE_SECONDS}s)"
    );

    // A leader frozen mid-batch (SIGSTOP: a paused VM, a starved CPU) is replaced; thawed,
    // its term has ended by its own clock, so it finishes nothing it had started and
    // reconciles nothing more, though its watches deliver what changed meanwhile.
    let mut frozen = std::mem::replace(&mut replicas[leader], start("operator-c").await?);
    let more = Batch::apply(&ns, "r", 30).await?;
    poll_within("some of the next batch sent", SETTLE, || async { Ok(more.sent(&ns).await? >= 5) }).await?;
    ensure!(frozen.process.signal("-STOP"), "SIGSTOP was not delivered");
    let stopped = Instant::now();
    wait_leading(&replicas[leader], Duration::from_secs(LEASE_SECONDS * 3)).await?;
    let replaced = stopped.elapsed();
    ensure!(frozen.process.signal("-CONT"), "SIGCONT was not delivered");
    poll_within("the thawed replica following", Duration::from_secs(LEASE_SECONDS * 3), || async {
        let log = std::fs::read_to_string(frozen.process.log())?;
        Ok(log.contains("stopped leading") && !leads(&frozen).await?)
    })
    .await?;
    let thawed = reconciles(&frozen).await?;
    let last = Batch::apply(&ns, "s", 5).await?;
    let during = more.converged(&ns, &mailpit.api_url).await?;
    let after = last.converged(&ns, &mailpit.api_url).await?;
    let since = reconciles(&frozen).await? - thawed;
    println!(
        "frozen leader: SIGSTOPped mid-batch, replaced {replaced:.1?} later; the batch converged \
         with {} duplicates; thawed, it reconciled {since} more",
        during.duplicates + after.duplicates
    );
    ensure!(since == 0, "the thawed former leader reconciled {since} objects");
    ensure!(
        during.duplicates + after.duplicates <= 1,
        "{} duplicate emails around one freeze",
        during.duplicates + after.duplicates
    );
    frozen.process.stop();
    Ok(())
}

/// How many reconciles the replica has run, of every kind.
async fn reconciles(replica: &Operator) -> anyhow::Result<u64> {
    replica.metric("roster_reconciles_total").await
}

/// Whether the replica says it leads (`roster_leader 1`).
async fn leads(replica: &Operator) -> anyhow::Result<bool> {
    Ok(replica.metric("roster_leader").await? == 1)
}

/// The index of the one replica that leads, once exactly one does.
async fn sole_leader(replicas: &[Operator]) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(LEASE_SECONDS * 3);
    loop {
        let mut leading = Vec::new();
        for (index, replica) in replicas.iter().enumerate() {
            if leads(replica).await? {
                leading.push(index);
            }
        }
        if let [only] = leading[..] {
            return Ok(only);
        }
        ensure!(Instant::now() < deadline, "not exactly one replica leading: {leading:?}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits until `replica` says it leads.
pub async fn wait_leading(replica: &Operator, within: Duration) -> anyhow::Result<()> {
    poll_within("the replica leading", within, || leads(replica)).await
}

/// Signs one person in again and again until stopped, counting answers and failures.
struct Probe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    answered: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
}

impl Probe {
    fn start(portal: &str, address: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let url = format!("{portal}/api/v1/login");
        let (until, ok, bad) = (stop.clone(), answered.clone(), failed.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
            while !until.load(Ordering::Relaxed) {
                let body = json!({"email": address, "password": PASSWORD});
                match http.post(&url).json(&body).send().await {
                    Ok(response) if response.status().as_u16() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => bad.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(50)).await; // pacing, not synchronisation
            }
        });
        Self { stop, task, answered, failed }
    }

    async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        (self.answered.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}
