//! What makes a `PasswordReset` one ([`super::reset`] does the rest): it applies to a person
//! who finished onboarding, its claim only records which reset's link is open (the old
//! password keeps working until the person sets a new one), its link lives `spec.ttl`, and
//! it stops for a deactivated user or one without the second factor the link must be
//! proven with — not for a locked-out person, who is exactly who needs it.

use k8s_openapi::jiff::SignedDuration;

use super::Context;
use super::names::{PASSWORD_RESET_LABEL, PASSWORD_RESET_LINK_TYPE, PASSWORD_RESET_TOKEN_TYPE};
use super::reset::{ResetKind, ResetSpec};
use crate::api::conditions::reasons;
use crate::api::{Delivery, Initiator, PasswordReset, ResetStatus, User, UserState};
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
            requested_by_person: self.spec.initiator == Initiator::Person,
        }
    }

    fn status(&self) -> ResetStatus {
        self.status.clone().unwrap_or_default()
    }

    /// A person who finished onboarding (mid-onboarding, their invite link is the way).
    fn applies(user: &User, credentials: &CredentialFacts) -> bool {
        credentials.onboarded(user.spec.mfa.required)
    }

    /// A deactivated user; and one who has or should have a second factor but has none
    /// enrolled — nothing would prove who holds the link (with an MfaReset's emailed link,
    /// the mailbox alone would open the account) — unless the link is handed over
    /// (`delivery: Link`, immutable: the admin vouching) while an MfaReset is open: the
    /// person lost their phone and forgot their password.
    fn stops(&self, user: &User, credentials: &CredentialFacts, _ctx: &Context) -> Option<&'static str> {
        if user.spec.state_at(k8s_openapi::jiff::Timestamp::now()) == UserState::Inactive {
            return Some(reasons::USER_INACTIVE);
        }
        let vouched = self.spec.delivery == Delivery::Link;
        (credentials.reset_link_unproven(user.spec.mfa.required, vouched) && Self::applies(user, credentials))
            .then_some(reasons::SECOND_FACTOR_MISSING)
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
