//! Tests against a real control plane: etcd, kube-apiserver (RBAC on) and
//! kube-controller-manager (garbage collector and namespace controllers), started once for
//! this binary by `roster-testenv`, with the `roster` binary running against it.
//!
//! Each test gets its own namespace; on failure it prints the roster objects it saw and the
//! end of the operator's log. Logs of every process stay in `target/tmp/e2e/` after a run.

mod account;
mod admission;
mod batch;
mod browser;
mod chart;
mod cli;
mod cluster;
mod crash;
mod directory;
mod examples;
mod expiry;
mod faults;
mod harness;
mod hostile_http;
mod hygiene;
mod invites;
mod kubernetes;
mod leader;
mod lifecycle;
mod mail;
mod oauth2_proxy;
mod oidc;
mod oidc_clients;
mod operator;
mod outages;
mod password_resets;
mod portal;
mod recovery;
mod resets;
mod seeded;
mod settle;
mod signin;
mod specs;
mod tenancy;
mod trust;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let trials: Vec<_> = [
        account::trials(),
        admission::trials(),
        browser::trials(),
        chart::trials(),
        cli::trials(),
        cluster::trials(),
        crash::trials(),
        directory::trials(),
        examples::trials(),
        expiry::trials(),
        faults::trials(),
        hostile_http::trials(),
        invites::trials(),
        kubernetes::trials(),
        leader::trials(),
        lifecycle::trials(),
        mail::trials(),
        oauth2_proxy::trials(),
        oidc::trials(),
        oidc_clients::trials(),
        operator::trials(),
        outages::trials(),
        password_resets::trials(),
        portal::trials(),
        recovery::trials(),
        resets::trials(),
        settle::trials(),
        signin::trials(),
        specs::trials(),
        tenancy::trials(),
        trust::trials(),
    ]
    .into_iter()
    .flatten()
    .collect();
    if args.list {
        return libtest_mimic::run(&args, trials.into_iter().chain(hygiene::trials()).collect()).exit_code();
    }
    // Current-thread: the control plane's processes live as long as this (the main) thread.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("e2e: building a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = match runtime.block_on(harness::Env::start()) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("e2e: starting the test environment failed:\n{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let conclusion = libtest_mimic::run(&args, trials);
    // Checks over what every test left behind run after all of them.
    let after = libtest_mimic::run(&args, hygiene::trials());
    drop(env);
    if conclusion.has_failed() { conclusion.exit_code() } else { after.exit_code() }
}
