//! The user lifecycle as one pure function: from facts (the spec, the credentials Secret,
//! the user's invites, directory conflicts, the time) to the phase, the conditions, the
//! required actions and what the reconciler should do next. Nothing here is stored as the
//! only copy of a fact; every reconcile derives it afresh.

use k8s_openapi::jiff::Timestamp;

use crate::api::conditions::{self, Desired, reasons, status, types};
use crate::api::{InvitePhase, InvitePolicy, InviteSummary, RequiredAction, UserPhase, UserSpec, UserState};
use crate::credentials::record::EmailProof;
use crate::credentials::{CredentialFacts, Lockout, Standing};
use crate::directory::Conflict;

/// What keeps a user from proceeding until an admin acts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// A directory rule is broken.
    Directory(Conflict),
    /// A Secret named like the user's credentials Secret exists but is not this user's.
    CredentialsSecretTaken {
        /// The Secret's name.
        name: String,
    },
}

/// One of the user's invitations, as the lifecycle sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteFact {
    /// The UserInvite's name.
    pub name: String,
    /// Its phase, once its reconciler has set one.
    pub phase: Option<InvitePhase>,
    /// When its link stops working.
    pub expires_at: Option<Timestamp>,
    /// When it was created, to pick the current one.
    pub created: Option<Timestamp>,
    /// Its reconciler reports a problem delivering it (its Delivered condition is False).
    pub failing: bool,
}

/// Everything the lifecycle depends on.
#[derive(Clone, Debug)]
pub struct UserFacts<'a> {
    /// The desired state.
    pub spec: &'a UserSpec,
    /// Facts from the credentials Secret; `None` while it does not exist.
    pub credentials: Option<&'a CredentialFacts>,
    /// The user's invitations.
    pub invites: &'a [InviteFact],
    /// Why the user cannot proceed, if anything.
    pub blocker: Option<Blocker>,
    /// How failed sign-ins lock the user.
    pub lockout: Lockout,
    /// When the User was created.
    pub created: Option<Timestamp>,
    /// The time of this reconcile.
    pub now: Timestamp,
}

/// How long a new user's first status may wait for its invitation's delivery: beyond it,
/// `NEW` is written (a backlog, or something roster cannot see holds delivery up).
pub const SETTLE_LIMIT: k8s_openapi::jiff::SignedDuration = k8s_openapi::jiff::SignedDuration::from_mins(10);

/// What the lifecycle decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The phase.
    pub phase: UserPhase,
    /// The conditions, in a stable order.
    pub conditions: Vec<Desired>,
    /// What the person still has to do.
    pub required_actions: Vec<RequiredAction>,
    /// The invitation the status shows.
    pub invite: Option<InviteSummary>,
    /// roster should make sure the user's automatic invite exists.
    pub ensure_auto_invite: bool,
    /// roster should reset the failed-login count (the admin deactivated the user).
    pub clear_lockout: bool,
    /// The person may not hold sessions (deactivated or expired): roster ends them now, not
    /// at their next use.
    pub sessions_end: bool,
    /// roster should email a link that verifies the user's changed address.
    pub verify_email: bool,
    /// When a temporary lock ends (`None` when not locked, or locked until an admin acts).
    pub locked_until: Option<Timestamp>,
    /// When the facts change by themselves (a lock ends, the settling limit passes):
    /// reconcile again then. An invite's expiry is not among them: the invite's own
    /// controller marks it Expired at that moment, and the change wakes the User — one
    /// timer per person, not two, at 10,000 people waiting to onboard.
    pub recheck_at: Option<Timestamp>,
    /// roster's own work is about to move the user on: the automatic invite is being
    /// created or delivered, with no problem reported. A status never written waits for
    /// where it settles (one write per new user, not NEW and then PENDING).
    pub settling: bool,
}

/// Where the invitations stand, from the user's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Invitation {
    /// No invite exists.
    None,
    /// An invite exists but nothing was delivered yet.
    Undelivered,
    /// A link was delivered and still works.
    Delivered,
    /// The person used a link.
    Accepted,
    /// Every delivered link expired.
    Expired,
    /// Every invite was revoked or failed.
    Withdrawn,
}

fn invitation(invites: &[InviteFact], now: Timestamp) -> Invitation {
    let expired = |i: &InviteFact| {
        i.phase == Some(InvitePhase::Expired)
            || (i.phase == Some(InvitePhase::Sent) && i.expires_at.is_some_and(|e| e <= now))
    };
    if invites.is_empty() {
        Invitation::None
    } else if invites.iter().any(|i| i.phase == Some(InvitePhase::Accepted)) {
        Invitation::Accepted
    } else if invites.iter().any(|i| i.phase == Some(InvitePhase::Sent) && !expired(i)) {
        Invitation::Delivered
    } else if invites.iter().any(|i| matches!(i.phase, None | Some(InvitePhase::Pending))) {
        Invitation::Undelivered
    } else if invites.iter().any(expired) {
        Invitation::Expired
    } else {
        Invitation::Withdrawn
    }
}

/// The invite the status names: the newest one that is not withdrawn, else the newest.
fn current_invite(invites: &[InviteFact]) -> Option<InviteSummary> {
    let live = |i: &&InviteFact| !matches!(i.phase, Some(InvitePhase::Revoked | InvitePhase::Failed));
    let newest = |a: &&InviteFact, b: &&InviteFact| (a.created, &a.name).cmp(&(b.created, &b.name));
    invites.iter().filter(live).max_by(newest).or_else(|| invites.iter().max_by(newest)).map(|i| {
        InviteSummary { name: i.name.clone(), expires_at: i.expires_at.map(crate::api::status_time) }
    })
}

fn condition(type_: &'static str, holds: bool, reason: &'static str, message: impl Into<String>) -> Desired {
    Desired {
        type_,
        status: if holds { status::TRUE } else { status::FALSE },
        reason,
        message: message.into(),
    }
}

/// Derives the user's phase, conditions and next steps from its facts.
pub fn decide(facts: &UserFacts<'_>) -> Decision {
    let spec = facts.spec;
    let credentials = facts.credentials.cloned().unwrap_or_default();
    let invitation = invitation(facts.invites, facts.now);
    // A reset second factor keeps the user ACTIVE: sign-ins fail until they re-enrol.
    let reset_pending = credentials.mfa_reset_pending();
    let onboarded =
        credentials.password_set && (!spec.mfa.required || credentials.totp_enrolled || reset_pending);
    let standing = facts.lockout.of(&credentials, facts.now);
    let locked_out = standing.is_locked();
    let locked_until = match standing {
        Standing::Locked { until } => until,
        Standing::Open { .. } => None,
    };
    let deactivated = spec.state == UserState::Inactive;
    let expired = !deactivated && spec.expired(facts.now);

    let phase = if deactivated || expired || locked_out {
        UserPhase::Inactive
    } else if onboarded {
        UserPhase::Active
    } else if credentials.password_set
        || matches!(invitation, Invitation::Delivered | Invitation::Accepted | Invitation::Expired)
    {
        UserPhase::Pending
    } else {
        UserPhase::New
    };

    let mut required_actions = Vec::new();
    if !credentials.password_set {
        required_actions.push(RequiredAction::SetPassword);
    }
    if spec.mfa.required && !credentials.totp_enrolled {
        required_actions.push(RequiredAction::ConfigureTotp);
    }

    // Ready, Reconciling and Stalled: the summary.
    let (ready, reconciling, stalled): (Desired, bool, Option<&'static str>) = match (&facts.blocker, phase) {
        (Some(blocker), _) => {
            let (reason, message) = blocker_text(blocker);
            (condition(types::READY, false, reason, message), false, Some(reason))
        }
        (None, UserPhase::Inactive) if deactivated => (
            condition(
                types::READY,
                true,
                reasons::DEACTIVATED,
                "the user is deactivated (spec.state: Inactive); sign-ins are refused",
            ),
            false,
            None,
        ),
        (None, UserPhase::Inactive) if expired => (
            condition(
                types::READY,
                true,
                reasons::EXPIRED,
                format!(
                    "the account ended at {} (spec.expiresAt); sign-ins are refused; move spec.expiresAt later to reactivate",
                    spec.expires_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default()
                ),
            ),
            false,
            None,
        ),
        (None, UserPhase::Inactive) => (
            condition(
                types::READY,
                false,
                reasons::LOCKED_OUT,
                match locked_until {
                    Some(until) => format!(
                        "locked out after too many failed sign-ins until {}; set spec.state to Inactive and back to Active to unlock now",
                        crate::api::status_time(until).0
                    ),
                    None => "locked out after too many failed sign-ins; set spec.state to Inactive and back to Active to unlock".to_owned(),
                },
            ),
            false,
            // A lock that ends by itself needs no admin; one without an end does.
            locked_until.is_none().then_some(reasons::LOCKED_OUT),
        ),
        (None, UserPhase::Active) => {
            (condition(types::READY, true, reasons::ACTIVE, "the user has completed onboarding"), false, None)
        }
        (None, _) => match invitation {
            Invitation::Undelivered => (
                condition(
                    types::READY,
                    false,
                    reasons::INVITE_PENDING,
                    "roster is delivering the invitation",
                ),
                true,
                None,
            ),
            Invitation::Expired => (
                condition(
                    types::READY,
                    true,
                    reasons::INVITE_EXPIRED,
                    "the invitation expired; increase spec.resend on the UserInvite to send a new one",
                ),
                false,
                None,
            ),
            Invitation::None | Invitation::Withdrawn if !credentials.password_set => match spec.invite.policy
            {
                InvitePolicy::Auto => (
                    condition(
                        types::READY,
                        false,
                        reasons::INVITE_PENDING,
                        "roster is creating the invitation",
                    ),
                    true,
                    None,
                ),
                InvitePolicy::Manual => (
                    condition(
                        types::READY,
                        true,
                        reasons::AWAITING_INVITE,
                        "invite.policy is Manual: create a UserInvite for this user",
                    ),
                    false,
                    None,
                ),
            },
            _ => (
                condition(
                    types::READY,
                    true,
                    reasons::AWAITING_USER,
                    "waiting for the person to finish onboarding",
                ),
                false,
                None,
            ),
        },
    };

    let invited = match invitation {
        Invitation::Delivered => {
            condition(types::INVITED, true, reasons::INVITE_SENT, "an invitation link was delivered")
        }
        Invitation::Accepted => {
            condition(types::INVITED, true, reasons::INVITE_ACCEPTED, "the person used the invitation link")
        }
        Invitation::Expired => {
            condition(types::INVITED, false, reasons::INVITE_EXPIRED, "every delivered invitation expired")
        }
        Invitation::Withdrawn => condition(
            types::INVITED,
            false,
            reasons::INVITE_REVOKED,
            "every invitation was revoked or failed",
        ),
        Invitation::Undelivered => {
            condition(types::INVITED, false, reasons::INVITE_PENDING, "the invitation is not delivered yet")
        }
        Invitation::None => condition(types::INVITED, false, reasons::NOT_INVITED, "no invitation exists"),
    };
    let mfa = if credentials.totp_enrolled {
        condition(types::MFA_ENROLLED, true, reasons::TOTP_ENROLLED, "a TOTP authenticator is enrolled")
    } else if reset_pending {
        condition(
            types::MFA_ENROLLED,
            false,
            reasons::RESET_REQUESTED,
            "the second factor was reset; sign-ins fail until the person enrols a new authenticator",
        )
    } else if spec.mfa.required {
        condition(types::MFA_ENROLLED, false, reasons::NOT_ENROLLED, "no authenticator enrolled yet")
    } else {
        condition(types::MFA_ENROLLED, false, reasons::NOT_REQUIRED, "mfa.required is false")
    };

    let settle_by = facts.created.and_then(|created| created.checked_add(SETTLE_LIMIT).ok());
    let settling = phase == UserPhase::New
        && reconciling
        && facts.blocker.is_none()
        && !facts.invites.iter().any(|i| i.failing)
        && settle_by.is_some_and(|by| facts.now < by);
    let [reconciling, stalled] = conditions::kstatus(reconciling, stalled);
    let conditions = vec![
        ready,
        reconciling,
        stalled,
        invited,
        if credentials.password_set {
            condition(types::PASSWORD_SET, true, reasons::PASSWORD_SET, "a password is set")
        } else {
            condition(types::PASSWORD_SET, false, reasons::PASSWORD_NOT_SET, "no password set yet")
        },
        mfa,
        match credentials.email_verified(&spec.email) {
            EmailProof::Verified => condition(
                types::EMAIL_VERIFIED,
                true,
                reasons::LINK_USED,
                "the person used a link sent to this address",
            ),
            EmailProof::OtherAddress => condition(
                types::EMAIL_VERIFIED,
                false,
                reasons::EMAIL_CHANGED,
                "spec.email changed since the person used a link sent to their address; with invite.policy Auto, a link to confirm the new one is emailed to it",
            ),
            EmailProof::None => {
                condition(types::EMAIL_VERIFIED, false, reasons::NOT_VERIFIED, "no emailed link used yet")
            }
        },
        if locked_out && !deactivated {
            condition(
                types::LOCKED_OUT,
                true,
                reasons::TOO_MANY_FAILED_LOGINS,
                format!("{} consecutive failed sign-ins", credentials.failed_logins),
            )
        } else {
            condition(types::LOCKED_OUT, false, reasons::NOT_LOCKED_OUT, "sign-ins are not locked")
        },
    ];

    // The account's end is a deadline like a lock's: one timer, not a poll.
    let ends_at = spec.expires_at.as_ref().map(|t| t.0).filter(|_| !deactivated);
    let recheck_at = locked_until
        .filter(|_| !deactivated)
        .into_iter()
        .chain(ends_at)
        .chain(settle_by.filter(|_| settling))
        .filter(|e| *e > facts.now)
        .min();

    Decision {
        phase,
        conditions,
        required_actions,
        invite: current_invite(facts.invites),
        ensure_auto_invite: spec.invite.policy == InvitePolicy::Auto
            && !deactivated
            && !expired
            && facts.blocker.is_none()
            && !credentials.password_set
            && facts.credentials.is_some(),
        clear_lockout: deactivated && (credentials.failed_logins > 0 || credentials.locked_at.is_some()),
        verify_email: spec.invite.policy == InvitePolicy::Auto
            && !deactivated
            && !expired
            && facts.blocker.is_none()
            && credentials.onboarded(spec.mfa.required)
            // Only a change from a recorded address: a proof from before addresses were
            // recorded sends nothing (no mass email on upgrade).
            && credentials.email_verified_for.is_some()
            && credentials.email_verified(&spec.email) == EmailProof::OtherAddress,
        locked_until: locked_until.filter(|_| !deactivated),
        sessions_end: deactivated || expired,
        recheck_at,
        settling,
    }
}

fn blocker_text(blocker: &Blocker) -> (&'static str, String) {
    match blocker {
        Blocker::Directory(conflict) => conflict_text(conflict),
        Blocker::CredentialsSecretTaken { name } => (
            reasons::SECRET_NOT_OWNED,
            format!("Secret {name} exists and does not belong to this User; delete or rename it"),
        ),
    }
}

/// The reason and message of a directory conflict, as every object it holds back says it.
pub fn conflict_text(conflict: &Conflict) -> (&'static str, String) {
    match conflict {
        Conflict::DuplicateEmail { holder } => {
            (reasons::DUPLICATE_EMAIL, format!("the email is already used by User {holder}"))
        }
        Conflict::DuplicateUsername { holder } => {
            (reasons::DUPLICATE_USERNAME, format!("the username is already used by User {holder}"))
        }
        Conflict::EmailDomainNotAllowed { domain } => (
            reasons::EMAIL_DOMAIN_NOT_ALLOWED,
            format!("the email domain {domain} is not in --allowed-email-domains"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{InviteSettings, MfaSettings};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn spec(policy: InvitePolicy, state: UserState, mfa_required: bool) -> UserSpec {
        serde_json::from_value::<UserSpec>(serde_json::json!({"email": "jane@example.com"}))
            .map(|s| UserSpec {
                state,
                mfa: MfaSettings { required: mfa_required },
                invite: InviteSettings { policy },
                ..s
            })
            .unwrap()
    }

    fn invite(phase: Option<InvitePhase>, expires: Option<i64>) -> InviteFact {
        InviteFact {
            name: "jane-invite".into(),
            phase,
            expires_at: expires.map(at),
            created: Some(at(1)),
            failing: false,
        }
    }

    fn creds(password: bool, totp: bool, failed: u32) -> CredentialFacts {
        CredentialFacts {
            password_set: password,
            totp_enrolled: totp,
            failed_logins: failed,
            ..Default::default()
        }
    }

    struct Case {
        name: &'static str,
        spec: UserSpec,
        credentials: CredentialFacts,
        invites: Vec<InviteFact>,
        blocker: Option<Blocker>,
        phase: UserPhase,
        ready: (&'static str, &'static str),
    }

    fn facts_of(case: &Case) -> UserFacts<'_> {
        UserFacts {
            spec: &case.spec,
            credentials: Some(&case.credentials),
            invites: &case.invites,
            blocker: case.blocker.clone(),
            lockout: Lockout { threshold: 5, duration: None },
            created: Some(at(900)),
            now: at(1000),
        }
    }

    fn run(case: &Case) -> Decision {
        decide(&facts_of(case))
    }

    fn condition<'a>(decision: &'a Decision, type_: &str) -> &'a Desired {
        decision.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn phase_table() {
        use InvitePolicy::*;
        use UserState::*;
        let cases = [
            Case {
                name: "new, auto invite not yet created",
                spec: spec(Auto, Active, true),
                credentials: creds(false, false, 0),
                invites: vec![],
                blocker: None,
                phase: UserPhase::New,
                ready: ("False", reasons::INVITE_PENDING),
            },
            Case {
                name: "new, invite created but undelivered",
                spec: spec(Auto, Active, true),
                credentials: creds(false, false, 0),
                invites: vec![invite(Some(InvitePhase::Pending), None)],
                blocker: None,
                phase: UserPhase::New,
                ready: ("False", reasons::INVITE_PENDING),
            },
            Case {
                name: "new → pending: invite delivered",
                spec: spec(Auto, Active, true),
                credentials: creds(false, false, 0),
                invites: vec![invite(Some(InvitePhase::Sent), Some(2000))],
                blocker: None,
                phase: UserPhase::Pending,
                ready: ("True", reasons::AWAITING_USER),
            },
            Case {
                name: "pending with an expired invite (phase Expired)",
                spec: spec(Auto, Active, true),
                credentials: creds(false, false, 0),
                invites: vec![invite(Some(InvitePhase::Expired), Some(900))],
                blocker: None,
                phase: UserPhase::Pending,
                ready: ("True", reasons::INVITE_EXPIRED),
            },
            Case {
                name: "pending with a sent invite past its expiry",
                spec: spec(Auto, Active, true),
                credentials: creds(false, false, 0),
                invites: vec![invite(Some(InvitePhase::Sent), Some(999))],
                blocker: None,
                phase: UserPhase::Pending,
                ready: ("True", reasons::INVITE_EXPIRED),
            },
            Case {
                name: "pending: password set, TOTP missing",
                spec: spec(Auto, Active, true),
                credentials: creds(true, false, 0),
                invites: vec![invite(Some(InvitePhase::Accepted), Some(2000))],
                blocker: None,
                phase: UserPhase::Pending,
                ready: ("True", reasons::AWAITING_USER),
            },
            Case {
                name: "pending → active: password and TOTP",
                spec: spec(Auto, Active, true),
                credentials: creds(true, true, 0),
                invites: vec![invite(Some(InvitePhase::Accepted), Some(2000))],
                blocker: None,
                phase: UserPhase::Active,
                ready: ("True", reasons::ACTIVE),
            },
            Case {
                name: "active with the password only when mfa is not required",
                spec: spec(Auto, Active, false),
                credentials: creds(true, false, 0),
                invites: vec![invite(Some(InvitePhase::Accepted), Some(2000))],
                blocker: None,
                phase: UserPhase::Active,
                ready: ("True", reasons::ACTIVE),
            },
            Case {
                name: "active → inactive by state",
                spec: spec(Auto, Inactive, true),
                credentials: creds(true, true, 0),
                invites: vec![],
                blocker: None,
                phase: UserPhase::Inactive,
                ready: ("True", reasons::DEACTIVATED),
            },
            Case {
                name: "inactive by lockout",
                spec: spec(Auto, Active, true),
                credentials: creds(true, true, 5),
                invites: vec![],
                blocker: None,
                phase: UserPhase::Inactive,
                ready: ("False", reasons::LOCKED_OUT),
            },
            Case {
                name: "below the lockout threshold stays active",
                spec: spec(Auto, Active, true),
                credentials: creds(true, true, 4),
                invites: vec![],
                blocker: None,
                phase: UserPhase::Active,
                ready: ("True", reasons::ACTIVE),
            },
            Case {
                name: "reactivated after deactivation: back to what the facts give (active)",
                spec: spec(Auto, Active, true),
                credentials: creds(true, true, 0),
                invites: vec![invite(Some(InvitePhase::Revoked), Some(2000))],
                blocker: None,
                phase: UserPhase::Active,
                ready: ("True", reasons::ACTIVE),
            },
            Case {
                name: "reactivated before onboarding, invite revoked: new again",
                spec: spec(Auto, Active, true),
                credentials: creds(false, false, 0),
                invites: vec![invite(Some(InvitePhase::Revoked), Some(2000))],
                blocker: None,
                phase: UserPhase::New,
                ready: ("False", reasons::INVITE_PENDING),
            },
            Case {
                name: "reactivated after lockout (count cleared): active",
                spec: spec(Auto, Active, true),
                credentials: creds(true, true, 0),
                invites: vec![],
                blocker: None,
                phase: UserPhase::Active,
                ready: ("True", reasons::ACTIVE),
            },
            Case {
                name: "manual policy, no invite: new and waiting on an admin",
                spec: spec(Manual, Active, true),
                credentials: creds(false, false, 0),
                invites: vec![],
                blocker: None,
                phase: UserPhase::New,
                ready: ("True", reasons::AWAITING_INVITE),
            },
            Case {
                name: "manual policy, invite delivered: pending",
                spec: spec(Manual, Active, true),
                credentials: creds(false, false, 0),
                invites: vec![invite(Some(InvitePhase::Sent), Some(2000))],
                blocker: None,
                phase: UserPhase::Pending,
                ready: ("True", reasons::AWAITING_USER),
            },
            Case {
                name: "duplicate email: stalled",
                spec: spec(Auto, Active, true),
                credentials: creds(false, false, 0),
                invites: vec![],
                blocker: Some(Blocker::Directory(Conflict::DuplicateEmail { holder: "ns/other".into() })),
                phase: UserPhase::New,
                ready: ("False", reasons::DUPLICATE_EMAIL),
            },
        ];
        for case in &cases {
            let decision = run(case);
            assert_eq!(decision.phase, case.phase, "{}", case.name);
            let ready = condition(&decision, types::READY);
            assert_eq!((ready.status, ready.reason), case.ready, "{}", case.name);
        }
    }

    #[test]
    fn required_actions_follow_the_credentials() {
        let base = Case {
            name: "",
            spec: spec(InvitePolicy::Auto, UserState::Active, true),
            credentials: creds(false, false, 0),
            invites: vec![],
            blocker: None,
            phase: UserPhase::New,
            ready: ("", ""),
        };
        assert_eq!(run(&base).required_actions, [RequiredAction::SetPassword, RequiredAction::ConfigureTotp]);
        let half = Case { credentials: creds(true, false, 0), ..base };
        assert_eq!(run(&half).required_actions, [RequiredAction::ConfigureTotp]);
        let no_mfa = Case { spec: spec(InvitePolicy::Auto, UserState::Active, false), ..half };
        assert!(run(&no_mfa).required_actions.is_empty());
    }

    #[test]
    fn a_reset_second_factor_keeps_the_user_active_with_totp_to_configure() {
        let reset = CredentialFacts { mfa_reset_uid: Some("r1".into()), ..creds(true, false, 0) };
        let case = Case {
            name: "reset",
            spec: spec(InvitePolicy::Auto, UserState::Active, true),
            credentials: reset,
            invites: vec![invite(Some(InvitePhase::Accepted), Some(900))],
            blocker: None,
            phase: UserPhase::Active,
            ready: ("True", reasons::ACTIVE),
        };
        let decision = run(&case);
        assert_eq!(decision.phase, UserPhase::Active);
        assert_eq!(decision.required_actions, [RequiredAction::ConfigureTotp]);
        let mfa = condition(&decision, types::MFA_ENROLLED);
        assert_eq!((mfa.status, mfa.reason), ("False", reasons::RESET_REQUESTED));
    }

    #[test]
    fn stalled_and_reconciling_follow_ready() {
        let blocked = Case {
            name: "",
            spec: spec(InvitePolicy::Auto, UserState::Active, true),
            credentials: creds(false, false, 0),
            invites: vec![],
            blocker: Some(Blocker::Directory(Conflict::EmailDomainNotAllowed { domain: "gmail.com".into() })),
            phase: UserPhase::New,
            ready: ("", ""),
        };
        let decision = run(&blocked);
        let stalled = condition(&decision, types::STALLED);
        assert_eq!((stalled.status, stalled.reason), ("True", reasons::EMAIL_DOMAIN_NOT_ALLOWED));
        assert!(condition(&decision, types::READY).message.contains("gmail.com"));
        assert!(!decision.ensure_auto_invite, "a blocked user is not invited");

        let waiting = Case { blocker: None, ..blocked };
        let decision = run(&waiting);
        assert_eq!(condition(&decision, types::RECONCILING).status, "True");
        assert_eq!(condition(&decision, types::STALLED).status, "False");
        assert!(decision.ensure_auto_invite);
    }

    #[test]
    fn deactivation_clears_a_lockout_and_is_not_reported_as_one() {
        let case = Case {
            name: "",
            spec: spec(InvitePolicy::Auto, UserState::Inactive, true),
            credentials: creds(true, true, 7),
            invites: vec![],
            blocker: None,
            phase: UserPhase::Inactive,
            ready: ("", ""),
        };
        let decision = run(&case);
        assert!(decision.clear_lockout);
        assert_eq!(condition(&decision, types::LOCKED_OUT).status, "False");
        assert!(!decision.ensure_auto_invite);
    }

    #[test]
    fn manual_users_get_no_automatic_invite() {
        let case = Case {
            name: "",
            spec: spec(InvitePolicy::Manual, UserState::Active, true),
            credentials: creds(false, false, 0),
            invites: vec![],
            blocker: None,
            phase: UserPhase::New,
            ready: ("", ""),
        };
        assert!(!run(&case).ensure_auto_invite);
    }

    #[test]
    fn a_new_user_settles_while_its_invitation_is_on_its_way_and_not_when_it_is_stuck() {
        let case = |policy, invites: Vec<InviteFact>, blocker: Option<Blocker>| Case {
            name: "",
            spec: spec(policy, UserState::Active, true),
            credentials: creds(false, false, 0),
            invites,
            blocker,
            phase: UserPhase::New,
            ready: ("", ""),
        };
        let failing = InviteFact { failing: true, ..invite(Some(InvitePhase::Pending), None) };
        let taken = Blocker::CredentialsSecretTaken { name: "jane-credentials".into() };
        let settling = |c: &Case| run(c).settling;
        assert!(settling(&case(InvitePolicy::Auto, vec![], None)), "the invite is being created");
        assert!(settling(&case(InvitePolicy::Auto, vec![invite(None, None)], None)), "not reconciled yet");
        assert!(settling(&case(InvitePolicy::Auto, vec![invite(Some(InvitePhase::Pending), None)], None)));
        assert!(!settling(&case(InvitePolicy::Auto, vec![failing], None)), "delivery reports a problem");
        assert!(!settling(&case(InvitePolicy::Auto, vec![], Some(taken))), "an admin must act");
        assert!(!settling(&case(InvitePolicy::Manual, vec![], None)), "waiting for an admin");
        let sent = invite(Some(InvitePhase::Sent), Some(5000));
        assert!(!settling(&case(InvitePolicy::Auto, vec![sent], None)), "PENDING is where it settles");
        let new = case(InvitePolicy::Auto, vec![], None);
        let decision = run(&new);
        assert_eq!(decision.recheck_at, Some(at(900) + SETTLE_LIMIT), "NEW is written at the limit");
        let late = decide(&UserFacts { now: at(900) + SETTLE_LIMIT, ..facts_of(&new) });
        assert!(!late.settling, "after the limit the user shows NEW");
    }

    #[test]
    fn an_invites_expiry_is_left_to_the_invite() {
        let case = Case {
            name: "",
            spec: spec(InvitePolicy::Auto, UserState::Active, true),
            credentials: creds(false, false, 0),
            invites: vec![
                invite(Some(InvitePhase::Sent), Some(1500)),
                invite(Some(InvitePhase::Revoked), Some(1200)),
            ],
            blocker: None,
            phase: UserPhase::Pending,
            ready: ("", ""),
        };
        // The invite controller marks it Expired then, which reconciles the User.
        assert_eq!(run(&case).recheck_at, None);
    }

    #[test]
    fn the_status_names_the_newest_live_invite() {
        let mut old = invite(Some(InvitePhase::Sent), Some(2000));
        old.name = "old".into();
        let mut revoked = invite(Some(InvitePhase::Revoked), Some(3000));
        revoked.name = "newer-but-revoked".into();
        revoked.created = Some(at(5));
        assert_eq!(current_invite(&[old, revoked]).map(|i| i.name), Some("old".into()));
    }

    #[test]
    fn a_temporary_lock_says_until_when_asks_no_admin_and_ends_by_itself() {
        let spec = spec(InvitePolicy::Manual, UserState::Active, false);
        let locked_at: Timestamp = "2026-01-01T00:00:00.123456789Z".parse().unwrap();
        let credentials = CredentialFacts { locked_at: Some(locked_at), ..creds(true, false, 5) };
        let decide_at = |now: Timestamp| {
            decide(&UserFacts {
                spec: &spec,
                credentials: Some(&credentials),
                invites: &[],
                blocker: None,
                lockout: Lockout {
                    threshold: 5,
                    duration: Some(k8s_openapi::jiff::SignedDuration::from_mins(15)),
                },
                created: None,
                now,
            })
        };
        let until: Timestamp = "2026-01-01T00:15:00.123456789Z".parse().unwrap();
        let locked = decide_at(locked_at);
        assert_eq!(locked.phase, UserPhase::Inactive);
        assert_eq!(locked.locked_until, Some(until));
        assert_eq!(locked.recheck_at, Some(until), "reconciled again when the lock ends");
        let ready = condition(&locked, types::READY);
        assert!(ready.message.contains("until 2026-01-01T00:15:00Z"), "{}", ready.message);
        assert_eq!(condition(&locked, types::STALLED).status, "False", "nothing for an admin to do");
        let later = decide_at(until);
        assert_eq!((later.phase, later.locked_until), (UserPhase::Active, None));
    }

    #[test]
    fn email_verified_follows_the_address_it_verified() {
        let mut spec = spec(InvitePolicy::Auto, UserState::Active, false);
        let verified = CredentialFacts {
            email_verified_at: Some(at(10)),
            email_verified_for: Some("jane@example.com".into()),
            ..creds(true, false, 0)
        };
        let reason = |spec: &UserSpec, credentials: &CredentialFacts| {
            let decision = decide(&UserFacts {
                spec,
                credentials: Some(credentials),
                invites: &[],
                blocker: None,
                lockout: Lockout { threshold: 5, duration: None },
                created: None,
                now: at(1000),
            });
            let verified = condition(&decision, types::EMAIL_VERIFIED);
            (verified.status, verified.reason)
        };
        assert_eq!(reason(&spec, &verified), ("True", reasons::LINK_USED));
        spec.email = "JANE@example.com".into();
        assert_eq!(reason(&spec, &verified), ("True", reasons::LINK_USED), "case does not matter");
        spec.email = "jane@elsewhere.example".into();
        assert_eq!(reason(&spec, &verified), ("False", reasons::EMAIL_CHANGED));
        let unrecorded = CredentialFacts { email_verified_for: None, ..verified };
        assert_eq!(
            reason(&spec, &unrecorded),
            ("False", reasons::EMAIL_CHANGED),
            "an address not recorded proves nothing"
        );
    }

    #[test]
    fn an_account_ends_at_its_expiry_and_a_later_date_reactivates_it() {
        let mut expiring = spec(InvitePolicy::Auto, UserState::Active, true);
        expiring.expires_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(1500)));
        let case = Case {
            name: "onboarded, ends at 1500",
            spec: expiring,
            credentials: creds(true, true, 0),
            invites: vec![invite(Some(InvitePhase::Accepted), Some(2000))],
            blocker: None,
            phase: UserPhase::Active,
            ready: ("True", reasons::ACTIVE),
        };
        let before = run(&case);
        assert_eq!(before.phase, UserPhase::Active);
        assert_eq!(before.recheck_at, Some(at(1500)), "woken at the deadline, not polled");
        assert!(!before.sessions_end);
        let ended = decide(&UserFacts { now: at(1500), ..facts_of(&case) });
        assert_eq!(ended.phase, UserPhase::Inactive);
        let ready = condition(&ended, types::READY);
        assert_eq!((ready.status, ready.reason), ("True", reasons::EXPIRED));
        assert!(ready.message.contains("spec.expiresAt"), "{}", ready.message);
        assert!(ended.sessions_end, "an ended account keeps no sessions");
        assert_eq!(ended.recheck_at, None);
        assert!(!ended.clear_lockout, "only deactivation unlocks");
        let mut later = case.spec.clone();
        later.expires_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(3000)));
        let moved = decide(&UserFacts { spec: &later, now: at(1500), ..facts_of(&case) });
        assert_eq!((moved.phase, moved.recheck_at), (UserPhase::Active, Some(at(3000))));
        let fresh = Case { credentials: creds(false, false, 0), invites: vec![], ..case };
        let new_but_ended = decide(&UserFacts { now: at(1600), ..facts_of(&fresh) });
        assert!(!new_but_ended.ensure_auto_invite, "an ended account is not invited");
        let deactivated = spec(InvitePolicy::Auto, UserState::Inactive, true);
        let both = decide(&UserFacts { spec: &deactivated, ..facts_of(&fresh) });
        assert!(both.sessions_end);
    }
}
