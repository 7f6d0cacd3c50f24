//! The portal under load: link look-ups with random tokens (a miss must cost the same at
//! any number of token Secrets) and sign-ins, next to the argon2 floor — cores ÷ the time
//! of one verification with roster's default parameters, measured here.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use roster::api::User;
use roster::credentials::{Argon2Settings, PasswordHasher, Token};
use serde::Serialize;

use crate::load::{self, Load};

/// The password of every sign-in user.
const PASSWORD: &str = "bench-correct-horse-battery-staple";
/// Verifications timed for the floor.
const SAMPLES: usize = 9;

/// Sign-in throughput and its floor.
#[derive(Clone, Debug, Serialize)]
pub struct Signin {
    /// The load's figures.
    pub load: Load,
    /// One argon2id verification with the default parameters, ms (median).
    pub verify_ms: f64,
    /// cores ÷ one verification: sign-ins per second no implementation can beat.
    pub floor_per_second: f64,
    /// Concurrent clients (closed loop: each sends its next request when answered).
    pub clients: usize,
}

/// `GET /api/v1/invites/{random}` from `clients` clients for `duration`.
pub async fn lookups(portal: &str, clients: usize, duration: Duration) -> anyhow::Result<Load> {
    let http = crate::http_client();
    let portal = portal.to_owned();
    Ok(load::run(clients, duration, move |_| {
        let (http, portal) = (http.clone(), portal.clone());
        async move {
            let Ok(token) = Token::generate() else { return 0 };
            let url = format!("{portal}/api/v1/invites/{}", token.expose());
            http.get(url).send().await.map_or(0, |r| r.status().as_u16())
        }
    })
    .await)
}

/// Signs `clients` users in over and over for `duration` (client `i` as user `signin-i`,
/// whose password the benchmark set and who has no second factor).
pub async fn run(
    client: &Client,
    namespace: &str,
    portal: &str,
    clients: usize,
    cores: usize,
    duration: Duration,
    argon2: &Argon2Floor,
) -> anyhow::Result<Signin> {
    let Argon2Floor { hash, verify_ms } = argon2;
    let verify_ms = *verify_ms;
    for i in 0..clients {
        prepare(client, namespace, &format!("signin-{i}"), hash).await?;
    }
    let http = crate::http_client();
    let url = format!("{portal}/api/v1/login");
    let body = |i: usize| serde_json::json!({"username": format!("signin-{i}"), "password": PASSWORD});
    // Each account answers 200 before the clock starts: the portal's cache holds its hash.
    let until = Instant::now() + Duration::from_secs(60);
    for i in 0..clients {
        loop {
            let response = http.post(&url).json(&body(i)).send().await?;
            if response.status().is_success() {
                break;
            }
            if Instant::now() > until {
                bail!("signin-{i} cannot sign in: {}", response.status());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let load = load::run(clients, duration, move |i| {
        let (http, url, body) = (http.clone(), url.clone(), body(i));
        async move { http.post(url).json(&body).send().await.map_or(0, |r| r.status().as_u16()) }
    })
    .await;
    Ok(Signin { load, verify_ms, floor_per_second: cores as f64 * 1000.0 / verify_ms, clients })
}

/// One argon2id verification with roster's default parameters, timed before anything else
/// runs: later, the control plane's own work (garbage collection, compaction after
/// thousands of writes) competes for the same cores and would inflate it.
pub struct Argon2Floor {
    /// A hash of the sign-in users' password.
    hash: String,
    /// The median of a few verifications, ms.
    verify_ms: f64,
}

impl Argon2Floor {
    /// Hashes the password once and times its verification.
    pub async fn measure() -> anyhow::Result<Self> {
        let hasher = PasswordHasher::new(Argon2Settings::default(), 1)?;
        let hash = hasher.hash(PASSWORD).await?;
        let verify_ms = verify_time(&hasher, &hash).await?;
        Ok(Self { hash, verify_ms })
    }
}

/// The median time of one verification, ms.
async fn verify_time(hasher: &PasswordHasher, hash: &str) -> anyhow::Result<f64> {
    let mut times = Vec::new();
    for _ in 0..SAMPLES {
        let started = Instant::now();
        if !hasher.verify(PASSWORD, hash).await? {
            bail!("the benchmark's own hash does not verify");
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[SAMPLES / 2])
}

/// A User with a password and no second factor, its hash written where the portal sets
/// it: the credentials Secret roster created.
async fn prepare(client: &Client, namespace: &str, name: &str, hash: &str) -> anyhow::Result<()> {
    let user: User = serde_json::from_value(serde_json::json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "User",
        "metadata": {"name": name},
        "spec": {"email": format!("{name}@example.com"), "mfa": {"required": false}, "invite": {"policy": "Manual"}},
    }))?;
    Api::<User>::namespaced(client.clone(), namespace).create(&PostParams::default(), &user).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = roster::controller::names::credentials_secret_name(name);
    let until = Instant::now() + Duration::from_secs(60);
    while secrets.get_opt(&secret).await?.is_none() {
        if Instant::now() > until {
            bail!("roster did not create {secret}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let patch = serde_json::json!({"stringData": {
        "passwordHash": hash,
        "passwordSetAt": "2026-01-01T00:00:00Z",
    }});
    secrets
        .patch(&secret, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context("writing a password hash")?;
    Ok(())
}
