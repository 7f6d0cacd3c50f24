//! roster: a Kubernetes operator that manages people's accounts.
//!
//! Map of the crate:
//! - [`api`]: the custom resources (`User`, `UserInvite`, `MfaReset`, `PasswordReset`,
//!   `OidcClient`), their schemas and
//!   admission rules, condition types and reasons. Types only, no I/O.
//! - [`controller`]: one reconciler per kind and the context they share.
//! - [`credentials`]: argon2id passwords, the password policy, TOTP and link tokens (pure).
//! - [`lifecycle`]: the user lifecycle — facts to phase and conditions (pure).
//! - [`directory`]: email and username uniqueness, allowed domains (pure).
//! - [`index`]: indexes over the watch caches (directory, token hashes, a user's invites).
//! - [`facts`]: writing facts into a credentials Secret under optimistic concurrency.
//! - [`mail`]: SMTP settings, email templates by locale, delivery with classified failures.
//! - [`config`]: the settings `roster run` takes, as flags with environment fallbacks.
//! - [`telemetry`]: logs and Prometheus metrics.
//! - [`health`]: the metrics port (`/healthz`, `/readyz`, `/metrics`).
//! - [`leader`]: leader election on a Lease: only the leader reconciles.
//! - [`memory`]: memory freed by a burst of work goes back to the operating system.
//! - [`signin`]: the one sign-in decision (password, TOTP, lockout, replay) every door uses.
//! - [`portal`]: the self-service portal (onboarding pages, the JSON API, sign-in).
//! - [`registration`]: what an `OidcClient` registration means: client IDs, redirect URIs,
//!   whom a client admits (pure).
//!
//! Errors are one [`Error`] enum; every failure path in a reconcile ends in it.
#![forbid(unsafe_code)]

pub mod account;
pub mod api;
pub mod census;
pub mod cli;
pub mod config;
pub mod controller;
pub mod credentials;
pub mod directory;
pub mod facts;
pub mod health;
pub mod import;
pub mod index;
pub mod leader;
pub mod lifecycle;
pub mod mail;
pub mod memory;
pub mod oidc;
pub mod portal;
pub mod registration;
pub mod signin;
pub mod telemetry;

mod error;
pub use error::{Error, Result};
