//! What makes an `MfaReset` one ([`super::reset`] does the rest): it resets an enrolled (or
//! an already reset, or a required but missing) second factor, its claim clears the
//! enrolment, its link (24 h) leads to (re-)enrolment, and it stops for a deactivated or
//! locked-out user.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::Context;
use super::names::{RESET_LABEL, RESET_LINK_TYPE, RESET_TOKEN_TYPE};
use super::reset::{ResetKind, ResetSpec};
use crate::api::conditions::reasons;
use crate::api::{Delivery, MfaReset, ResetStatus, User, UserState};
use crate::credentials::CredentialFacts;
use crate::credentials::record::{
    MFA_REENROLLED_FOR, MFA_RESET_AT, MFA_RESET_UID, REENROL_TOKEN, TOTP_ENROLLED_AT, TOTP_LAST_STEP,
    TOTP_PENDING, TOTP_REPLACEMENT, TOTP_SECRET,
};
use crate::facts::Changes;

/// How long a re-enrolment link works.
pub const LINK_TTL: SignedDuration = SignedDuration::from_hours(24);

impl ResetKind for MfaReset {
    const KIND: &'static str = "MfaReset";
    const TOKEN_TYPE: &'static str = RESET_TOKEN_TYPE;
    const LINK_TYPE: &'static str = RESET_LINK_TYPE;
    const LABEL: &'static str = RESET_LABEL;
    const PATH: &'static str = "mfa-reset";
    const OPEN_KEY: &'static str = MFA_RESET_UID;
    const USED_KEY: &'static str = MFA_REENROLLED_FOR;
    const TEMPLATE: &'static str = "mfa-reset";
    const ISSUED: &'static str = reasons::RESET;
    const USED: (&'static str, &'static str) =
        (reasons::REENROLLED, "the person enrolled a new authenticator");

    fn spec(&self) -> ResetSpec<'_> {
        ResetSpec {
            user: &self.spec.user_ref.name,
            reason: &self.spec.reason,
            delivery: self.spec.delivery,
            ttl_after_finished: self.spec.ttl_seconds_after_finished,
            link_ttl: LINK_TTL,
            requested_by_person: false,
        }
    }

    fn status(&self) -> ResetStatus {
        self.status.clone().unwrap_or_default()
    }

    /// An enrolled or already reset second factor — or none at all where one is required
    /// and the person has a password (onboarded before `mfa.required` was set): the reset's
    /// link is then how they enrol one, proving their password first.
    fn applies(user: &User, credentials: &CredentialFacts) -> bool {
        credentials.totp_enrolled
            || credentials.mfa_reset_pending()
            || (user.spec.mfa.required
                && credentials.password_set
                && credentials.onboarding_completed_at.is_some())
    }

    fn stops(&self, user: &User, credentials: &CredentialFacts, ctx: &Context) -> Option<&'static str> {
        let locked = ctx.settings.lockout.of(credentials, Timestamp::now()).is_locked();
        (user.spec.state_at(Timestamp::now()) == UserState::Inactive || locked)
            .then_some(reasons::USER_INACTIVE)
    }

    fn claim(now: &str) -> Changes {
        Changes::from([
            (TOTP_SECRET, None),
            (TOTP_ENROLLED_AT, None),
            (TOTP_LAST_STEP, None),
            (TOTP_PENDING, None),
            (TOTP_REPLACEMENT, None),
            (REENROL_TOKEN, None),
            (MFA_RESET_AT, Some(now.to_owned())),
        ])
    }

    fn issued_message(delivery: Delivery) -> &'static str {
        match delivery {
            Delivery::Email => "the second factor was cleared; the re-enrolment link was emailed",
            Delivery::Link => {
                "the second factor was cleared; the link is in the Secret named by status.linkSecretRef"
            }
        }
    }
}
