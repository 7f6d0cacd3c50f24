//! A crash in the middle of onboarding: a batch of Users applied, the operator killed with
//! SIGKILL several times at random moments and started again. Afterwards everyone is
//! PENDING with a Sent invite and an email, nothing is orphaned or doubled, and no more
//! emails went out twice than there were kills. 300 people and 5 kills by default
//! (`ROSTER_CRASH_USERS`, `ROSTER_CRASH_KILLS` for other sizes); its own control plane and
//! Mailpit, so the shared operator's work does not mix in.

use std::time::Duration;

use anyhow::ensure;
use libtest_mimic::Trial;

use crate::batch::{Batch, random_between, size};
use crate::harness::{Ns, Operator, plane_and_mailpit, shared, standalone};

pub fn trials() -> Vec<Trial> {
    vec![standalone("crash::sigkill_mid_onboarding_loses_and_doubles_nothing", scenario)]
}

async fn scenario() -> anyhow::Result<()> {
    let (users, kills) = (size("CRASH_USERS", 300), size("CRASH_KILLS", 5));
    let dir = shared().work_dir.join("crash");
    let (plane, mailpit, client) = plane_and_mailpit(&dir, false, users * 3, &[]).await?;
    // One reconcile at a time: at most one delivery in flight at each kill, and a batch
    // long enough for the kills.
    let flags = ["--concurrency=1"];
    let mut operator = Operator::start(plane.kubeconfig(), &dir, "operator-0", &flags).await?;
    let ns = Ns::create(client, "crash").await?;

    let batch = Batch::apply(&ns, "p", users).await?;
    let mut sent_at_kill = Vec::new();
    for kill in 1..=kills {
        // When the fault strikes: a random moment, not a synchronisation.
        tokio::time::sleep(random_between(Duration::from_millis(200), Duration::from_millis(1500))).await;
        sent_at_kill.push(batch.sent(&ns).await?);
        operator.process.kill();
        operator = Operator::start(plane.kubeconfig(), &dir, &format!("operator-{kill}"), &flags).await?;
    }
    let restarted = std::time::Instant::now();
    let figures = batch.converged(&ns, &mailpit.api_url).await?;
    // A delivery claimed by a killed process is sent again once its claim is a minute old.
    println!(
        "crash: {users} users, {kills} SIGKILLs (invites sent at each kill: {sent_at_kill:?}); \
         converged {:.1?} after the last restart: {} PENDING, {} Secrets, {} emails, {} duplicates",
        restarted.elapsed(),
        figures.users,
        figures.secrets,
        figures.emails,
        figures.duplicates
    );
    ensure!(
        sent_at_kill.iter().any(|sent| *sent < users),
        "every kill came after the batch had finished: nothing was tested"
    );
    ensure!(
        figures.duplicates <= kills,
        "{} duplicate emails after {kills} kills (at most one per kill)",
        figures.duplicates
    );
    drop(operator);
    Ok(())
}
