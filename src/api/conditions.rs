//! Condition types and reasons roster sets, named once, and the one rule for updating a
//! condition list: `lastTransitionTime` moves only when `status` flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    /// The summary every tool reads: roster has done all it can for this generation.
    pub const READY: &str = "Ready";
    /// kstatus: roster is still working on this generation.
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: roster cannot go on until an admin acts.
    pub const STALLED: &str = "Stalled";
    /// User: an invitation link was delivered.
    pub const INVITED: &str = "Invited";
    /// User: a password is set.
    pub const PASSWORD_SET: &str = "PasswordSet";
    /// User: a TOTP authenticator is enrolled.
    pub const MFA_ENROLLED: &str = "MfaEnrolled";
    /// User: the person proved the mailbox by using an emailed link.
    pub const EMAIL_VERIFIED: &str = "EmailVerified";
    /// User: sign-ins are locked after too many failures.
    pub const LOCKED_OUT: &str = "LockedOut";
    /// UserInvite: the link reached the person (email sent, or Link Secret written).
    pub const DELIVERED: &str = "Delivered";
}

/// Condition reasons.
pub mod reasons {
    /// roster has seen this generation and is working on it.
    pub const RECONCILING: &str = "Reconciling";
    /// roster has done all it can for this generation.
    pub const RECONCILED: &str = "Reconciled";
    /// Nothing waits on an admin.
    pub const NOT_STALLED: &str = "NotStalled";
    /// The user completed onboarding.
    pub const ACTIVE: &str = "Active";
    /// The admin set `spec.state: Inactive`.
    pub const DEACTIVATED: &str = "Deactivated";
    /// Too many failed sign-ins.
    pub const LOCKED_OUT: &str = "LockedOut";
    /// Waiting for the person.
    pub const AWAITING_USER: &str = "AwaitingUser";
    /// `invite.policy: Manual` and no invite yet: waiting for an admin.
    pub const AWAITING_INVITE: &str = "AwaitingInvite";
    /// An invite exists and is being delivered.
    pub const INVITE_PENDING: &str = "InvitePending";
    /// An invitation link was delivered.
    pub const INVITE_SENT: &str = "InviteSent";
    /// The person used the link.
    pub const INVITE_ACCEPTED: &str = "InviteAccepted";
    /// The delivered links expired.
    pub const INVITE_EXPIRED: &str = "InviteExpired";
    /// The invitations were revoked or failed.
    pub const INVITE_REVOKED: &str = "InviteRevoked";
    /// No invitation exists.
    pub const NOT_INVITED: &str = "NotInvited";
    /// A password is set.
    pub const PASSWORD_SET: &str = "PasswordSet";
    /// No password yet.
    pub const PASSWORD_NOT_SET: &str = "PasswordNotSet";
    /// TOTP is enrolled.
    pub const TOTP_ENROLLED: &str = "TotpEnrolled";
    /// TOTP is required and not enrolled.
    pub const NOT_ENROLLED: &str = "NotEnrolled";
    /// An MfaReset cleared the second factor; the person has not enrolled a new one.
    pub const RESET_REQUESTED: &str = "ResetRequested";
    /// MfaReset: the user's second factor was cleared and the re-enrolment link issued.
    pub const RESET: &str = "Reset";
    /// MfaReset: the user had no second factor to reset.
    pub const NOTHING_TO_RESET: &str = "NothingToReset";
    /// MfaReset: the user is deactivated or locked out.
    pub const USER_INACTIVE: &str = "UserInactive";
    /// MfaReset: a newer MfaReset for the same user replaced this one's link.
    pub const SUPERSEDED: &str = "Superseded";
    /// MfaReset: the person enrolled a new authenticator through the link.
    pub const REENROLLED: &str = "Reenrolled";
    /// PasswordReset: the link to set a new password was issued and delivered.
    pub const LINK_ISSUED: &str = "LinkIssued";
    /// PasswordReset: the person set a new password through the link.
    pub const PASSWORD_CHANGED: &str = "PasswordChanged";
    /// PasswordReset: the user must prove a second factor and has none enrolled.
    pub const SECOND_FACTOR_MISSING: &str = "SecondFactorMissing";
    /// `mfa.required: false`.
    pub const NOT_REQUIRED: &str = "NotRequired";
    /// The person used an emailed link.
    pub const LINK_USED: &str = "LinkUsed";
    /// No emailed link used yet.
    pub const NOT_VERIFIED: &str = "NotVerified";
    /// The verified address is no longer the User's email.
    pub const EMAIL_CHANGED: &str = "EmailChanged";
    /// Consecutive failed sign-ins reached the threshold.
    pub const TOO_MANY_FAILED_LOGINS: &str = "TooManyFailedLogins";
    /// Sign-ins are not locked.
    pub const NOT_LOCKED_OUT: &str = "NotLockedOut";
    /// An older User has the same email.
    pub const DUPLICATE_EMAIL: &str = "DuplicateEmail";
    /// An older User has the same username.
    pub const DUPLICATE_USERNAME: &str = "DuplicateUsername";
    /// The email's domain is not allowed.
    pub const EMAIL_DOMAIN_NOT_ALLOWED: &str = "EmailDomainNotAllowed";
    /// A Secret roster would read or write as its own (credentials, token, link) exists but
    /// is not controlled by the expected owner: roster leaves it alone.
    pub const SECRET_NOT_OWNED: &str = "SecretNotOwned";
    /// Invite: the person already completed onboarding; only an operation that proves who
    /// asks (a PasswordReset, an MfaReset) may change their credentials.
    pub const ALREADY_ONBOARDED: &str = "AlreadyOnboarded";
    /// Invite: the user is deactivated or gone, so the link was withdrawn.
    pub const REVOKED: &str = "Revoked";
    /// The referenced User does not exist.
    pub const USER_NOT_FOUND: &str = "UserNotFound";
    /// Invite: the email was accepted by the SMTP server.
    pub const EMAIL_SENT: &str = "EmailSent";
    /// Invite: the link was written to the admin-only Secret.
    pub const LINK_CREATED: &str = "LinkCreated";
    /// Invite: a delivery is being attempted.
    pub const DELIVERING: &str = "Delivering";
    /// Invite: the SMTP server could not be reached or answered 4xx; retried with backoff.
    pub const SMTP_UNAVAILABLE: &str = "SmtpUnavailable";
    /// Invite: the SMTP server refused the message (5xx); not retried.
    pub const SMTP_REJECTED: &str = "SmtpRejected";
    /// Invite: roster has no SMTP settings (`--smtp-secret`), or they are unusable.
    pub const SMTP_NOT_CONFIGURED: &str = "SmtpNotConfigured";
    /// Invite: the template ConfigMap is missing, or a template in it is broken.
    pub const TEMPLATE_INVALID: &str = "TemplateInvalid";
    /// Invite: the link's time ran out.
    pub const EXPIRED: &str = "Expired";
    /// Invite: the person used the link.
    pub const ACCEPTED: &str = "Accepted";
    /// OidcClient: people can sign in through it.
    pub const REGISTERED: &str = "Registered";
    /// OidcClient: roster runs without `--issuer-url`, so it serves no OpenID Connect.
    pub const ISSUER_NOT_CONFIGURED: &str = "IssuerNotConfigured";
    /// OidcClient: a redirect URI is not one roster may send codes to.
    pub const INVALID_REDIRECT_URI: &str = "InvalidRedirectURI";
    /// OidcClient: a post-logout redirect URI is not one roster may send people to.
    pub const INVALID_POST_LOGOUT_REDIRECT_URI: &str = "InvalidPostLogoutRedirectURI";
    /// OidcClient: `userNamespaces` names other namespaces, and the client's namespace is not
    /// one `--oidc-trusted-namespaces` lists.
    pub const USER_NAMESPACES_NOT_ALLOWED: &str = "UserNamespacesNotAllowed";
    /// OidcClient: the Secret `secretRef` names does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// OidcClient: the Secret `secretRef` names has no usable `clientSecret`.
    pub const SECRET_INVALID: &str = "SecretInvalid";
}

/// `True`, `False` or `Unknown`, as Kubernetes spells them.
pub mod status {
    /// The condition holds.
    pub const TRUE: &str = "True";
    /// The condition does not hold.
    pub const FALSE: &str = "False";
    /// roster cannot tell yet.
    pub const UNKNOWN: &str = "Unknown";
}

/// A condition as a reconcile decides it, before timestamps are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// The condition type, one of [`types`].
    pub type_: &'static str,
    /// One of [`status`].
    pub status: &'static str,
    /// A CamelCase reason, one of [`reasons`].
    pub reason: &'static str,
    /// A sentence for people.
    pub message: String,
}

/// kstatus's `Reconciling` and `Stalled`, always set so that a reader sees their state:
/// `Stalled` carries the reason an admin must act on.
pub fn kstatus(reconciling: bool, stalled: Option<&'static str>) -> [Desired; 2] {
    [
        if reconciling {
            Desired {
                type_: types::RECONCILING,
                status: status::TRUE,
                reason: reasons::RECONCILING,
                message: "roster is working on this generation".into(),
            }
        } else {
            Desired {
                type_: types::RECONCILING,
                status: status::FALSE,
                reason: reasons::RECONCILED,
                message: "roster has done all it can for this generation".into(),
            }
        },
        match stalled {
            Some(reason) => Desired {
                type_: types::STALLED,
                status: status::TRUE,
                reason,
                message: "an admin must act; see the Ready condition".into(),
            },
            None => Desired {
                type_: types::STALLED,
                status: status::FALSE,
                reason: reasons::NOT_STALLED,
                message: "nothing waits on an admin".into(),
            },
        },
    ]
}

/// The same conditions, now describing `generation`: for a reconcile that found nothing to
/// change but has seen a newer generation.
pub fn restamp(current: &[Condition], generation: Option<i64>) -> Vec<Condition> {
    current.iter().cloned().map(|c| Condition { observed_generation: generation, ..c }).collect()
}

/// Merges `desired` into `current` for `generation`: conditions keep their
/// `lastTransitionTime` unless their status flips, and ones roster no longer sets are dropped.
/// The result is ordered as `desired`, so equal inputs give equal lists.
pub fn merge(
    current: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|want| {
            let previous = current.iter().find(|c| c.type_ == want.type_);
            let last_transition_time = match previous {
                Some(prev) if prev.status == want.status => prev.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: want.type_.to_owned(),
                status: want.status.to_owned(),
                reason: want.reason.to_owned(),
                message: want.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn ready(status: &'static str, message: &str) -> Desired {
        Desired { type_: types::READY, status, reason: reasons::RECONCILING, message: message.into() }
    }

    #[test]
    fn a_new_condition_transitions_now() {
        let merged = merge(&[], &[ready(status::UNKNOWN, "working")], Some(1), &at(10));
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].last_transition_time, at(10));
        assert_eq!(merged[0].observed_generation, Some(1));
    }

    #[test]
    fn same_status_keeps_transition_time_but_takes_new_message_and_generation() {
        let first = merge(&[], &[ready(status::UNKNOWN, "a")], Some(1), &at(10));
        let second = merge(&first, &[ready(status::UNKNOWN, "b")], Some(2), &at(20));
        assert_eq!(second[0].last_transition_time, at(10));
        assert_eq!(second[0].message, "b");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn flipped_status_moves_transition_time() {
        let first = merge(&[], &[ready(status::UNKNOWN, "a")], Some(1), &at(10));
        let second = merge(&first, &[ready(status::TRUE, "a")], Some(1), &at(20));
        assert_eq!(second[0].last_transition_time, at(20));
    }

    #[test]
    fn conditions_no_longer_desired_are_dropped() {
        let stalled = Desired { type_: types::STALLED, ..ready(status::TRUE, "x") };
        let first = merge(&[], &[ready(status::FALSE, "a"), stalled], Some(1), &at(10));
        let second = merge(&first, &[ready(status::TRUE, "a")], Some(2), &at(20));
        assert_eq!(second.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(), ["Ready"]);
    }

    #[test]
    fn merging_an_unchanged_decision_is_a_fixed_point() {
        let desired = [ready(status::UNKNOWN, "a")];
        let first = merge(&[], &desired, Some(3), &at(10));
        assert_eq!(merge(&first, &desired, Some(3), &at(99)), first);
    }
}
