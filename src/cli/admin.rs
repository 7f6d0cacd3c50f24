//! The admin commands: each writes what an admin could write with kubectl — a UserInvite's
//! `spec.resend`, a new MfaReset or PasswordReset, a User's `spec.state` — with the caller's
//! own credentials, and prints what it wrote. `link` reads a link Secret, and only one
//! roster made for that invite or reset (its type and controller owner checked), so a
//! planted Secret cannot make an admin hand out someone else's link.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{CliError, Cluster, FIELD_MANAGER, table};
use crate::api::{Delivery, MfaReset, PasswordReset, User, UserInvite, UserReference, UserState};
use crate::census::Counted;
use crate::controller::names;

/// One User, by name.
#[derive(Clone, Debug, clap::Args)]
pub struct UserArgs {
    /// The User's metadata.name.
    pub user: String,
    #[command(flatten)]
    pub cluster: Cluster,
}

/// A reset of one User.
#[derive(Clone, Debug, clap::Args)]
pub struct ResetArgs {
    /// The User's metadata.name.
    pub user: String,
    /// Why, for the audit record (e.g. "lost phone, ticket 4711"); required.
    #[arg(long)]
    pub reason: String,
    /// email: roster emails the person the link. link: roster keeps it for you to hand
    /// over (`roster link USER` prints it).
    #[arg(long, value_enum, default_value = "email", ignore_case = true)]
    pub delivery: DeliveryArg,
    #[command(flatten)]
    pub cluster: Cluster,
}

/// How a reset's link reaches the person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeliveryArg {
    /// roster emails it.
    Email,
    /// roster keeps it in a Secret for an admin.
    Link,
}

impl From<DeliveryArg> for Delivery {
    fn from(delivery: DeliveryArg) -> Self {
        match delivery {
            DeliveryArg::Email => Delivery::Email,
            DeliveryArg::Link => Delivery::Link,
        }
    }
}

/// Which Users to list.
#[derive(Clone, Debug, clap::Args)]
pub struct ListArgs {
    /// Only Users in this phase: NEW, PENDING, ACTIVE or INACTIVE (any case).
    #[arg(long)]
    pub phase: Option<String>,
    /// Only Users whose name, username, email, display name, given or family name or phone
    /// contains this (any case).
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
    /// Every namespace, not only the current one.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub cluster: Cluster,
}

/// Whether `user` is one a search for `text` finds: `text` (any case) in its name,
/// username, email, display name, given or family name, or phone.
pub fn found_by(user: &User, text: &str) -> bool {
    let text = text.to_lowercase();
    let spec = &user.spec;
    let name = user.name_any();
    [
        Some(&name),
        spec.username.as_ref(),
        Some(&spec.email),
        spec.display_name.as_ref(),
        spec.given_name.as_ref(),
        spec.family_name.as_ref(),
        spec.phone.as_ref(),
    ]
    .into_iter()
    .flatten()
    .any(|field| field.to_lowercase().contains(&text))
}

/// The User `name` in `namespace`, or what to do when there is none.
async fn user(client: &kube::Client, namespace: &str, name: &str) -> Result<User, CliError> {
    let api: Api<User> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name).await.map_err(CliError::api(format!("reading User {namespace}/{name}")))?.ok_or_else(|| {
        CliError::NotFound(format!(
            "no User {name:?} in namespace {namespace}: `roster list -n {namespace}` lists them, -n picks another namespace"
        ))
    })
}

/// `resend USER`: a new link for the person's invitation (its `spec.resend` increased: the
/// old link stops working), or — for a User whose invites an admin creates — a first
/// UserInvite.
pub async fn resend(args: UserArgs) -> Result<(), CliError> {
    let (client, namespace) = args.cluster.connect().await?;
    let user = user(&client, &namespace, &args.user).await?;
    let name = &args.user;
    match user.phase() {
        "ACTIVE" => {
            return Err(CliError::Refused(format!(
                "{name} is ACTIVE: an onboarded person gets no invite. For a forgotten password: roster reset-password {name} --reason …; for a lost authenticator: roster reset-mfa {name} --reason …"
            )));
        }
        "INACTIVE" => {
            return Err(CliError::Refused(format!(
                "{name} is INACTIVE (deactivated, expired or locked out): `roster activate {name}` first, or move spec.expiresAt"
            )));
        }
        _ => {}
    }
    let invites: Api<UserInvite> = Api::namespaced(client.clone(), &namespace);
    let current = user.status.as_ref().and_then(|s| s.invite.as_ref()).map(|i| i.name.clone());
    let Some(current) = current else {
        if user.spec.invite.policy == crate::api::InvitePolicy::Auto {
            return Err(CliError::Refused(format!(
                "roster has not invited {name} yet: with invite.policy Auto it does once it has reconciled the User (`kubectl describe user {name} -n {namespace}` says why not)"
            )));
        }
        // A fixed name: run twice (or twice at once) before roster records the invite on the
        // User, the second create is refused instead of a second invitation going out.
        let invite_name = names::auto_invite_name(name);
        let invite = UserInvite::new(
            &invite_name,
            serde_json::from_value(json!({"userRef": UserReference::to(name.clone())}))
                .map_err(|e| CliError::Refused(e.to_string()))?,
        );
        match invites.create(&post_params(), &invite).await {
            Ok(_) => println!("userinvite.roster.dev/{invite_name} created: roster emails {name} a link"),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                return Err(CliError::Refused(format!(
                    "UserInvite {invite_name} exists already and roster has not recorded it on {name} yet: run again in a moment"
                )));
            }
            Err(e) => return Err(CliError::api(format!("creating UserInvite {invite_name}"))(e)),
        }
        return Ok(());
    };
    let invite = invites
        .get(&current)
        .await
        .map_err(CliError::api(format!("reading UserInvite {namespace}/{current}")))?;
    let resend = invite.spec.resend + 1;
    // On the condition that nothing changed since the read (its resourceVersion): two admins
    // resending at once send one new link, not two. roster writing the status meanwhile is
    // a conflict too, so a conflict is read again and retried while spec.resend stands.
    let mut seen = invite.clone();
    for attempt in 1.. {
        let patch =
            json!({"metadata": {"resourceVersion": seen.resource_version()}, "spec": {"resend": resend}});
        match invites.patch(&current, &patch_params(), &Patch::Merge(&patch)).await {
            Ok(_) => break,
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < 5 => {
                seen = invites
                    .get(&current)
                    .await
                    .map_err(CliError::api(format!("reading UserInvite {current}")))?;
                if seen.spec.resend != invite.spec.resend {
                    return Err(CliError::Refused(format!(
                        "someone else increased spec.resend of UserInvite {current} meanwhile: {name} has a new link already"
                    )));
                }
            }
            Err(e) => {
                return Err(CliError::api(format!("increasing spec.resend of UserInvite {current}"))(e));
            }
        }
    }
    let how = match invite.spec.delivery {
        Delivery::Email => format!("roster emails {name} a new link"),
        Delivery::Link => format!("`roster link {name}` prints the new link"),
    };
    println!(
        "userinvite.roster.dev/{current} patched: spec.resend {} → {resend}; the old link stops working and {how}",
        invite.spec.resend
    );
    Ok(())
}

/// Field manager `kubectl-roster` on what the commands create.
fn post_params() -> PostParams {
    PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }
}

/// Field manager `kubectl-roster` on what the commands patch.
fn patch_params() -> PatchParams {
    PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }
}

/// A name the API server generates from `<user>-<what>-`, short enough for the kind's
/// 63-character limit.
fn with_generated_name<K: Resource>(mut object: K, user: &str, what: &str) -> K {
    let room = 63 - 5 - what.len() - 2;
    let base: String = user.chars().take(room).collect();
    let base = base.trim_end_matches(['-', '.']);
    object.meta_mut().name = None;
    object.meta_mut().generate_name = Some(format!("{base}-{what}-"));
    object
}

/// Which reset a command creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reset {
    /// An MfaReset: the second factor cleared once, and a link to enrol a new one.
    Mfa,
    /// A PasswordReset: a link to choose a new password (proving the current code when the
    /// person has one).
    Password,
}

/// `reset-mfa USER --reason …` / `reset-password USER --reason …`: creates the reset, named
/// by the API server from the user's name.
pub async fn reset(args: ResetArgs, kind: Reset) -> Result<(), CliError> {
    let (client, namespace) = args.cluster.connect().await?;
    user(&client, &namespace, &args.user).await?;
    let spec = json!({"userRef": UserReference::to(args.user.clone()), "reason": args.reason, "delivery": Delivery::from(args.delivery)});
    let unreadable = |e: serde_json::Error| CliError::Refused(e.to_string());
    let (created, what) = match kind {
        Reset::Mfa => {
            let reset = MfaReset::new("", serde_json::from_value(spec).map_err(unreadable)?);
            let reset = with_generated_name(reset, &args.user, "mfa");
            (create(&client, &namespace, &reset, &args.user).await?, "a link to enrol a new authenticator")
        }
        Reset::Password => {
            let reset = PasswordReset::new("", serde_json::from_value(spec).map_err(unreadable)?);
            let reset = with_generated_name(reset, &args.user, "password");
            (create(&client, &namespace, &reset, &args.user).await?, "a link to choose a new password")
        }
    };
    println!("{created} created: {}", after(args.delivery, &args.user, what));
    Ok(())
}

/// What happens next, as the creating command says it.
fn after(delivery: DeliveryArg, user: &str, what: &str) -> String {
    match delivery {
        DeliveryArg::Email => format!("roster emails {user} {what}"),
        DeliveryArg::Link => format!("`roster link {user}` prints {what} for you to hand over"),
    }
}

async fn create<K>(client: &kube::Client, namespace: &str, object: &K, user: &str) -> Result<String, CliError>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let created = api
        .create(&post_params(), object)
        .await
        .map_err(CliError::api(format!("creating a {} for {user}", K::kind(&()))))?;
    Ok(format!("{}.{}/{}", K::kind(&()).to_lowercase(), K::group(&()), created.name_any()))
}

/// `deactivate USER` / `activate USER`: sets `spec.state`.
pub async fn set_state(args: UserArgs, state: UserState) -> Result<(), CliError> {
    let (client, namespace) = args.cluster.connect().await?;
    let user = user(&client, &namespace, &args.user).await?;
    let name = &args.user;
    let (word, effect) = match state {
        UserState::Inactive => ("deactivated", "invites revoked, sign-ins refused, sessions ended"),
        UserState::Active => ("activated", "the person may onboard and sign in again"),
    };
    if user.spec.state == state {
        println!("user.roster.dev/{name} unchanged: already {state:?}");
        return Ok(());
    }
    if user.annotations().contains_key("argocd.argoproj.io/tracking-id")
        || user.labels().contains_key("app.kubernetes.io/instance")
    {
        eprintln!(
            "warning: {name} is managed by Argo CD or Helm, which will set spec.state back: change it in Git too"
        );
    }
    // As `kubectl patch --type merge` would: setting a state needs no earlier one.
    let api: Api<User> = Api::namespaced(client.clone(), &namespace);
    api.patch(name, &patch_params(), &Patch::Merge(&json!({"spec": {"state": state}})))
        .await
        .map_err(CliError::api(format!("setting spec.state of User {name}")))?;
    println!("user.roster.dev/{name} {word} (spec.state {state:?}): {effect}");
    Ok(())
}

/// `link USER`: the links roster keeps for an admin to hand over (delivery Link) — the
/// person's invitation's, and those of their outstanding resets.
pub async fn link(args: UserArgs) -> Result<(), CliError> {
    let (client, namespace) = args.cluster.connect().await?;
    let user = user(&client, &namespace, &args.user).await?;
    let name = &args.user;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut found = Vec::new();
    if let Some(current) = user.status.as_ref().and_then(|s| s.invite.as_ref()) {
        let invites: Api<UserInvite> = Api::namespaced(client.clone(), &namespace);
        if let Some(invite) = invites
            .get_opt(&current.name)
            .await
            .map_err(CliError::api(format!("reading UserInvite {}", current.name)))?
        {
            let status = invite.status.clone().unwrap_or_default();
            if status.observed_resend == Some(invite.spec.resend) {
                let secret = status.link_secret_ref.map(|r| r.name);
                found.extend(owned_link(&secrets, &invite, secret, names::INVITE_LINK_TYPE).await?);
            } else {
                // The Secret still holds the link of an earlier issuance, or none yet.
                eprintln!(
                    "userinvite/{}: roster has not issued the link for spec.resend {} yet: run again in a moment",
                    current.name, invite.spec.resend
                );
            }
        }
    }
    // The person's resets, selected by the API server (`spec.userRef.name` is selectable).
    let of_user = format!("spec.userRef.name={name}");
    let mfa: Api<MfaReset> = Api::namespaced(client.clone(), &namespace);
    let keep = |reset: &MfaReset| reset.spec.user_ref.name == *name;
    for reset in super::list_all(&mfa, Some(&of_user), keep, "listing MfaResets").await? {
        let secret = link_secret(reset.status.as_ref());
        found.extend(owned_link(&secrets, &reset, secret, names::RESET_LINK_TYPE).await?);
    }
    let password: Api<PasswordReset> = Api::namespaced(client.clone(), &namespace);
    let keep = |reset: &PasswordReset| reset.spec.user_ref.name == *name;
    for reset in super::list_all(&password, Some(&of_user), keep, "listing PasswordResets").await? {
        let secret = link_secret(reset.status.as_ref());
        found.extend(owned_link(&secrets, &reset, secret, names::PASSWORD_RESET_LINK_TYPE).await?);
    }
    if found.is_empty() {
        return Err(CliError::NotFound(format!(
            "{name} has no link to hand over: links with delivery Email are emailed, and a link is deleted once used, expired or revoked. For one to hand over: roster reset-password {name} --reason … --delivery link (or a UserInvite with delivery: Link)"
        )));
    }
    for (what, url) in found {
        println!("{what}: {url}");
    }
    Ok(())
}

/// The name of a reset's link Secret, as its status records it.
fn link_secret(status: Option<&crate::api::ResetStatus>) -> Option<String> {
    status.and_then(|s| s.link_secret_ref.as_ref()).map(|r| r.name.clone())
}

/// The link in `secret` when roster made it for `owner`: the Secret's type is `kind` and
/// `owner` (by uid) controls it. Anything else is passed over with a warning.
async fn owned_link<K: Resource<DynamicType = ()>>(
    secrets: &Api<Secret>,
    owner: &K,
    secret: Option<String>,
    kind: &str,
) -> Result<Option<(String, String)>, CliError> {
    let Some(secret) = secret else { return Ok(None) };
    let Some(found) = secrets
        .get_opt(&secret)
        .await
        .map_err(CliError::api(format!("reading Secret {secret} (needs get on secrets)")))?
    else {
        return Ok(None);
    };
    let controlled = crate::controller::controlled_by(&found, owner);
    if found.type_.as_deref() != Some(kind) || !controlled {
        eprintln!(
            "warning: Secret {secret} was not made by roster for {} {}: passed over",
            K::kind(&()),
            owner.name_any()
        );
        return Ok(None);
    }
    let url = found
        .data
        .as_ref()
        .and_then(|d| d.get(names::LINK_URL))
        .and_then(|v| String::from_utf8(v.0.clone()).ok());
    Ok(url.map(|url| (format!("{}/{}", K::kind(&()).to_lowercase(), owner.name_any()), url)))
}

/// `list [--phase P]`: Users with their email, phase, last sign-in and expiry; the phase
/// filtered by the API server (`status.phase` is a selectable field).
pub async fn list(args: ListArgs) -> Result<(), CliError> {
    let phase = match &args.phase {
        None => None,
        Some(phase) => {
            let upper = phase.to_uppercase();
            if !User::PHASES.contains(&upper.as_str()) {
                return Err(CliError::Refused(format!(
                    "--phase {phase:?}: must be one of {}",
                    User::PHASES.join(", ")
                )));
            }
            Some(upper)
        }
    };
    let (client, namespace) = args.cluster.connect().await?;
    let api: Api<User> =
        if args.all_namespaces { Api::all(client) } else { Api::namespaced(client, &namespace) };
    // The phase is selected by the API server (`status.phase` is selectable).
    let selector = phase.as_ref().map(|phase| format!("status.phase={phase}"));
    let keep = |user: &User| {
        phase.as_deref().is_none_or(|phase| user.phase() == phase)
            && args.search.as_deref().is_none_or(|text| found_by(user, text))
    };
    let mut rows = Vec::new();
    for user in super::list_all(&api, selector.as_deref(), keep, "listing Users").await? {
        let status = user.status.clone().unwrap_or_default();
        let time = |t: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            t.map_or_else(|| "-".to_owned(), |t| t.0.to_string())
        };
        let mut row = Vec::new();
        if args.all_namespaces {
            row.push(user.namespace().unwrap_or_default());
        }
        row.extend([
            user.name_any(),
            user.spec.email.clone(),
            user.phase().to_owned(),
            time(status.last_login_at),
            time(user.spec.expires_at.clone()),
        ]);
        rows.push(row);
    }
    let mut header = vec!["NAME", "EMAIL", "PHASE", "LAST SIGN-IN", "EXPIRES"];
    if args.all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    if rows.is_empty() {
        eprintln!("no Users{}", phase.map(|p| format!(" in phase {p}")).unwrap_or_default());
    } else {
        print!("{}", table(&header, &rows));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_finds_any_identifying_field_in_any_case() {
        let user = User::new(
            "jdoe",
            serde_json::from_value(json!({"email": "jane@example.com", "displayName": "Jane Doe", "phone": "+15551234567", "familyName": "Dœ"})).unwrap(),
        );
        for text in ["JDOE", "Example.COM", "jane doe", "555123", "dŒ"] {
            assert!(found_by(&user, text), "{text}");
        }
        assert!(!found_by(&user, "john"));
    }

    #[test]
    fn generated_names_fit_the_kinds_limit_and_stay_valid() {
        let long = "a".repeat(52) + ".b-c";
        let reset = with_generated_name(
            MfaReset::new(
                "",
                serde_json::from_value(json!({"userRef": {"name": "x"}, "reason": "r"})).unwrap(),
            ),
            &long,
            "password",
        );
        let prefix = reset.metadata.generate_name.unwrap();
        assert!(prefix.len() + 5 <= 63, "{prefix}");
        assert!(crate::api::admission::is_dns_subdomain(&format!("{prefix}abcde")), "{prefix}");
        assert!(reset.metadata.name.is_none());
    }
}
