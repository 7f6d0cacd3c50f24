//! The OidcClient reconciler: checks the registration, makes sure a confidential client has
//! its secret — generated once into `<name>-oidc`, which roster owns, or an admin's Secret
//! named by `secretRef` — and reports the client ID, the issuer and whether people can sign
//! in through it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::names::{CLIENT_ID, CLIENT_SECRET, OIDC_CLIENT_LABEL, OIDC_CLIENT_TYPE, oidc_secret_name};
use super::{Context, apply_status, delete_owned_secret, now, read_secret, write_owned_secret};
use crate::api::conditions::{self, Desired, reasons, status, types};
use crate::api::{LocalObjectReference, OidcClient, OidcClientStatus};
use crate::credentials::Token;
use crate::registration::{self, Invalid, MIN_SECRET_LEN};
use crate::{Error, Result};

/// How soon a client whose Secret is missing, unusable or someone else's looks again:
/// roster watches only its own Secrets, so an admin's fix is found by looking.
const SECRET_RECHECK: Duration = Duration::from_secs(60);
/// How often a client that uses an admin's Secret checks it is still there and usable.
const NAMED_SECRET_RECHECK: Duration = Duration::from_secs(600);

/// Reconciles one OidcClient.
pub async fn reconcile(client: Arc<OidcClient>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = client.namespace().unwrap_or_default();
    let invalid =
        registration::validate(&client.spec, &namespace, &ctx.settings.oidc_trusted_namespaces).err();
    let id = registration::client_id(&namespace, &client.name_any());
    let credentials = credentials(&client, &id, &ctx, invalid.is_none()).await?;
    if credentials == Credentials::Created {
        // Its watch event comes next; this is a fallback.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let decided = decide(invalid.as_ref(), &id, ctx.settings.issuer_url.as_deref(), &credentials);
    let current = client.status.clone().unwrap_or_default();
    let generation = client.metadata.generation;
    let desired = OidcClientStatus {
        client_id: Some(id),
        issuer: ctx.settings.issuer_url.clone(),
        secret_ref: credentials.secret_name().map(|name| LocalObjectReference { name }),
        observed_generation: generation,
        conditions: conditions::merge(&current.conditions, &decided, generation, &now()),
    };
    if desired != current {
        apply_status(&ctx, client.as_ref(), &desired).await?;
    }
    Ok(match credentials {
        Credentials::Missing(_) | Credentials::Unusable(_) | Credentials::NotOwned(_) => {
            Action::requeue(SECRET_RECHECK)
        }
        Credentials::Held(_) if client.spec.secret_ref.is_some() => Action::requeue(NAMED_SECRET_RECHECK),
        _ => Action::await_change(),
    })
}

/// Where a client's secret stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Credentials {
    /// A public client, or one whose registration is invalid: no secret.
    None,
    /// The Secret of this name holds a usable secret.
    Held(String),
    /// roster created `<name>-oidc` just now.
    Created,
    /// The Secret `secretRef` names does not exist.
    Missing(String),
    /// The Secret `secretRef` names has no usable `clientSecret`.
    Unusable(String),
    /// A Secret of the generated name exists and is not this client's.
    NotOwned(String),
}

impl Credentials {
    /// The Secret status names, for a client that has one.
    fn secret_name(&self) -> Option<String> {
        match self {
            Self::Held(name) => Some(name.clone()),
            _ => None,
        }
    }
}

/// Finds, or for a generated one creates (only for a `valid` client, with its `id`), the client's secret;
/// removes a generated one the client no longer uses (it turned public, or names its own),
/// so that only the current secret is in the cluster. An invalid client keeps the secret it
/// has: fixing a typo must not change what the application is configured with.
async fn credentials(client: &OidcClient, id: &str, ctx: &Context, valid: bool) -> Result<Credentials> {
    let generated = oidc_secret_name(&client.name_any());
    let cached = ctx.caches.owned_secret(client, &generated);
    let unused = client.spec.public || client.spec.secret_ref.is_some();
    if unused && cached.is_some() {
        delete_owned_secret(ctx, client, &generated).await?;
    }
    if client.spec.public {
        return Ok(Credentials::None);
    }
    if let Some(reference) = &client.spec.secret_ref {
        return Ok(match read_secret(ctx, client, &reference.name).await? {
            None => Credentials::Missing(reference.name.clone()),
            Some(secret) if usable(&secret) => Credentials::Held(reference.name.clone()),
            Some(_) => Credentials::Unusable(reference.name.clone()),
        });
    }
    if cached.as_deref().is_some_and(usable) {
        return Ok(Credentials::Held(generated));
    }
    if !valid {
        return Ok(Credentials::None);
    }
    let data = BTreeMap::from([
        (CLIENT_ID.to_owned(), id.to_owned()),
        (CLIENT_SECRET.to_owned(), Token::generate()?.expose().to_owned()),
    ]);
    match write_owned_secret(
        ctx,
        client,
        &generated,
        (OIDC_CLIENT_TYPE, OIDC_CLIENT_LABEL),
        data,
        cached.as_deref(),
    )
    .await
    {
        Ok(true) => Ok(Credentials::Created),
        // Ours (unlabelled, so not cached), or a deleted predecessor's awaiting garbage
        // collection: tried again with backoff.
        Ok(false) => {
            Err(Error::Conflict { object: format!("{}/{generated}", client.namespace().unwrap_or_default()) })
        }
        Err(Error::SecretNotOwned { secret }) => Ok(Credentials::NotOwned(secret)),
        Err(error) => Err(error),
    }
}

/// Whether `secret` holds a client secret of at least [`MIN_SECRET_LEN`] characters.
fn usable(secret: &Secret) -> bool {
    let value = secret.data.as_ref().and_then(|data| data.get(CLIENT_SECRET));
    value.is_some_and(|v| std::str::from_utf8(&v.0).is_ok_and(|s| s.chars().count() >= MIN_SECRET_LEN))
}

/// Decides the conditions of a client (`invalid` if its registration is, client ID `id`)
/// served at `issuer`, whose secret is `credentials`. Pure.
fn decide(
    invalid: Option<&Invalid>,
    id: &str,
    issuer: Option<&str>,
    credentials: &Credentials,
) -> Vec<Desired> {
    let refused = |reason: &'static str, message: String| {
        let ready = Desired { type_: types::READY, status: status::FALSE, reason, message };
        let [reconciling, stalled] = conditions::kstatus(false, Some(reason));
        vec![ready, reconciling, stalled]
    };
    if let Some(invalid) = invalid {
        return refused(
            invalid.reason(),
            format!("{invalid}; nobody signs in through this client until it is fixed"),
        );
    }
    match credentials {
        Credentials::Missing(name) => {
            return refused(
                reasons::SECRET_NOT_FOUND,
                format!("the Secret {name} named by secretRef does not exist in this namespace"),
            );
        }
        Credentials::Unusable(name) => {
            return refused(
                reasons::SECRET_INVALID,
                format!(
                    "the Secret {name} must hold a {CLIENT_SECRET} of at least {MIN_SECRET_LEN} characters"
                ),
            );
        }
        Credentials::NotOwned(name) => {
            return refused(
                reasons::SECRET_NOT_OWNED,
                format!(
                    "the Secret {name} exists and is not this client's: roster leaves it alone; remove it or name it in secretRef"
                ),
            );
        }
        Credentials::None | Credentials::Held(_) | Credentials::Created => {}
    }
    let Some(issuer) = issuer else {
        return refused(
            reasons::ISSUER_NOT_CONFIGURED,
            "roster runs without --issuer-url, so it serves no OpenID Connect; set it to sign people in"
                .to_owned(),
        );
    };
    let ready = Desired {
        type_: types::READY,
        status: status::TRUE,
        reason: reasons::REGISTERED,
        message: format!("people sign in through {issuer} with client ID {id}"),
    };
    let [reconciling, stalled] = conditions::kstatus(false, None);
    vec![ready, reconciling, stalled]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(spec: serde_json::Value) -> Option<Invalid> {
        let spec: crate::api::OidcClientSpec = serde_json::from_value(spec).unwrap();
        registration::validate(&spec, "team-a", &[]).err()
    }

    fn ready(decided: &[Desired]) -> (&'static str, &'static str, &str) {
        let ready = &decided[0];
        (ready.status, ready.reason, ready.message.as_str())
    }

    fn stalled(decided: &[Desired]) -> &'static str {
        decided[2].status
    }

    const ISSUER: Option<&str> = Some("https://id.example.com");

    #[test]
    fn a_sound_client_with_its_secret_is_registered() {
        let decided = decide(None, "team-a.argocd", ISSUER, &Credentials::Held("argocd-oidc".into()));
        let (status, reason, message) = ready(&decided);
        assert_eq!((status, reason), ("True", "Registered"));
        assert!(message.contains("https://id.example.com") && message.contains("team-a.argocd"), "{message}");
        assert_eq!(stalled(&decided), "False");
    }

    #[test]
    fn each_refusal_says_why_and_stalls() {
        let bad = invalid(serde_json::json!({"redirectUris": ["http://a.example.com/cb"]}));
        let foreign = invalid(
            serde_json::json!({"redirectUris": ["https://a.example.com/cb"], "userNamespaces": ["team-b"]}),
        );
        let held = Credentials::Held("argocd-oidc".into());
        let cases = [
            (bad.as_ref(), ISSUER, &held, "InvalidRedirectURI"),
            (foreign.as_ref(), ISSUER, &held, "UserNamespacesNotAllowed"),
            (None, ISSUER, &Credentials::Missing("mine".into()), "SecretNotFound"),
            (None, ISSUER, &Credentials::Unusable("mine".into()), "SecretInvalid"),
            (None, ISSUER, &Credentials::NotOwned("team-a/argocd-oidc".into()), "SecretNotOwned"),
            (None, None, &held, "IssuerNotConfigured"),
        ];
        for (invalid, issuer, credentials, expected) in cases {
            let decided = decide(invalid, "team-a.argocd", issuer, credentials);
            let (status, reason, message) = ready(&decided);
            assert_eq!((status, reason), ("False", expected), "{message}");
            assert_eq!(stalled(&decided), "True", "{expected}");
            assert_eq!(decided[2].reason, expected);
        }
    }

    #[test]
    fn a_usable_secret_holds_at_least_32_characters() {
        let secret = |value: &str| Secret {
            data: Some(BTreeMap::from([(CLIENT_SECRET.to_owned(), k8s_openapi::ByteString(value.into()))])),
            ..Default::default()
        };
        assert!(usable(&secret(&"x".repeat(32))));
        assert!(!usable(&secret(&"x".repeat(31))));
        assert!(!usable(&Secret::default()));
    }
}
