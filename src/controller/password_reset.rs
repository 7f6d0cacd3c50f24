//! What makes a `PasswordReset` one ([`super::reset`] does the rest): it applies to a user
//! who has a password, its claim only records which reset's link is open (the old password
//! keeps working until the person sets a new one), its link lives `spec.ttl`, and it stops
//! only for a deactivated user — a locked-out person is exactly who needs it.

use k8s_openapi::jiff::SignedDuration;

use super::Context;
use super::names::{PASSWORD_RESET_LABEL, PASSWORD_RESET_LINK_TYPE, PASSWORD_RESET_TOKEN_TYPE};
use super::reset::{ResetKind, ResetSpec};
use crate::api::conditions::reasons;
use crate::api::{Delivery, PasswordReset, ResetStatus, User, UserState};
use crate::credentials::CredentialFacts;
use crate::credentials::record::{
    PASSWORD_RESET_AT, PASSWORD_RESET_DONE_FOR, PASSWORD_RESET_FAILURES, PASSWORD_RESET_UID,
};
use crate::facts::Changes;

impl ResetKind for PasswordReset {
    const KIND: &'static str = "PasswordReset";
    const TOKEN_TYPE: &'static str = PASSWORD_RESET_TOKEN_TYPE;
    const LINK_TYPE: &'static str = PASSWORD_RESET_LINK_TYPE;
    const LABEL: &'static str = PASSWORD_RESET_LABEL;
    const PATH: &'static str = "password-reset";
    const OPEN_KEY: &'static str = PASSWORD_RESET_UID;
    const USED_KEY: &'static str = PASSWORD_RESET_DONE_FOR;
    const TEMPLATE: &'static str = "password-reset";
    const ISSUED: &'static str = reasons::LINK_ISSUED;
    const USED: (&'static str, &'static str) = (reasons::PASSWORD_CHANGED, "the person set a new password");

    fn spec(&self) -> ResetSpec<'_> {
        ResetSpec {
            user: &self.spec.user_ref.name,
            reason: &self.spec.reason,
            delivery: self.spec.delivery,
            ttl_after_finished: self.spec.ttl_seconds_after_finished,
            link_ttl: SignedDuration::try_from(std::time::Duration::from(self.spec.ttl))
                .unwrap_or(SignedDuration::from_hours(24)),
        }
    }

    fn status(&self) -> ResetStatus {
        self.status.clone().unwrap_or_default()
    }

    fn applies(_user: &User, credentials: &CredentialFacts) -> bool {
        credentials.password_set
    }

    fn stopped(user: &User, _credentials: &CredentialFacts, _ctx: &Context) -> bool {
        user.spec.state == UserState::Inactive
    }

    fn claim(now: &str) -> Changes {
        Changes::from([(PASSWORD_RESET_AT, Some(now.to_owned())), (PASSWORD_RESET_FAILURES, None)])
    }

    fn issued_message(delivery: Delivery) -> &'static str {
        match delivery {
            Delivery::Email => "the link to set a new password was emailed",
            Delivery::Link => {
                "the link is in the Secret named by status.linkSecretRef; the person was told by email"
            }
        }
    }
}
