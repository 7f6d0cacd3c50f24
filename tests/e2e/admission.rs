//! Bad input is refused by the API server itself — schema and CEL rules in the CRDs — with
//! a message that names the field.

use anyhow::{Context as _, bail, ensure};
use kube::api::{Patch, PatchParams, PostParams};
use libtest_mimic::Trial;
use roster::api::{MfaReset, OidcClient, User, UserInvite};
use serde_json::{Value, json};

use crate::harness::{Ns, trial};

pub fn trials() -> Vec<Trial> {
    vec![
        trial("admission::invalid_email", |ns| async move {
            expect_rejected(
                &ns,
                user(json!({"email": "jane.doe@"})),
                &["spec.email", "must be an email address"],
            )
            .await
        }),
        trial("admission::phone_must_be_e164", |ns| async move {
            let spec = json!({"email": "a@example.com", "phone": "555-1234"});
            expect_rejected(&ns, user(spec), &["spec.phone", "E.164"]).await
        }),
        trial("admission::unknown_state", |ns| async move {
            let spec = json!({"email": "a@example.com", "state": "Paused"});
            expect_rejected(&ns, user(spec), &["spec.state", "Unsupported value", "Paused"]).await
        }),
        trial("admission::ten_thousand_character_name", |ns| async move {
            let spec = json!({"email": "a@example.com", "givenName": "x".repeat(10_000)});
            expect_rejected(&ns, user(spec), &["spec.givenName", "Too long"]).await
        }),
        trial("admission::every_derived_name_and_label_fits", |ns| async move {
            // A 57-character User would name its automatic invite with 64 characters: a label
            // value too long, and delivery failing forever.
            let mut manifest = user(json!({"email": "a@example.com"}));
            manifest["metadata"]["name"] = json!("n".repeat(57));
            expect_rejected(&ns, manifest, &["metadata.name must be at most 56 characters"]).await?;
            let mut manifest = user(json!({"email": "b@example.com"}));
            manifest["metadata"]["name"] = json!("n".repeat(56));
            ns.apply(manifest).await.context("a 56-character User name is refused")?;
            let specs = [
                ("UserInvite", json!({"userRef": {"name": "a"}})),
                ("MfaReset", json!({"userRef": {"name": "a"}, "reason": "audit"})),
            ];
            for (kind, spec) in specs {
                let manifest = json!({
                    "apiVersion": "roster.dev/v1alpha1", "kind": kind, "metadata": {"name": "n".repeat(64)},
                    "spec": spec,
                });
                expect_rejected(&ns, manifest, &["metadata.name must be at most 63 characters"]).await?;
            }
            Ok(())
        }),
        trial("admission::bounded_lists_and_maps", |ns| async move {
            let groups: Vec<String> = (0..65).map(|i| format!("g{i}")).collect();
            let spec = json!({"email": "a@example.com", "groups": groups});
            expect_rejected(&ns, user(spec), &["spec.groups", "Too many"]).await?;
            let spec = json!({"email": "a@example.com", "groups": ["dev", "dev"]});
            expect_rejected(&ns, user(spec), &["spec.groups", "Duplicate value"]).await?;
            let attributes: serde_json::Map<String, Value> =
                (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
            let spec = json!({"email": "a@example.com", "attributes": attributes});
            expect_rejected(&ns, user(spec), &["spec.attributes", "Too many"]).await?;
            let spec = json!({"email": "a@example.com", "attributes": {"bad key!": "v"}});
            expect_rejected(&ns, user(spec), &["spec.attributes", "attribute names"]).await
        }),
        trial("admission::mfa_reset_requires_a_reason", |ns| async move {
            let missing = reset(json!({"userRef": {"name": "jane"}}));
            expect_rejected(&ns, missing, &["spec.reason", "Required value"]).await?;
            let empty = reset(json!({"userRef": {"name": "jane"}, "reason": ""}));
            expect_rejected(&ns, empty, &["spec.reason"]).await
        }),
        trial("admission::invite_ttl_is_a_bounded_duration", |ns| async move {
            for ttl in ["10x", "9000h", "0s"] {
                let spec = json!({"userRef": {"name": "jane"}, "ttl": ttl});
                expect_rejected(&ns, invite(spec), &["spec.ttl", "must be a duration"]).await?;
            }
            Ok(())
        }),
        trial("admission::user_ref_is_immutable", |ns| async move {
            ns.apply(invite(json!({"userRef": {"name": "jane"}}))).await?;
            let change = json!({"spec": {"userRef": {"name": "john"}}});
            let refused = ns
                .raw::<UserInvite>()
                .patch("example", &PatchParams::default(), &Patch::Merge(&change))
                .await;
            expect_message(refused, &["spec.userRef", "immutable"])?;
            ns.apply(reset(json!({"userRef": {"name": "jane"}, "reason": "lost phone"}))).await?;
            let refused =
                ns.raw::<MfaReset>().patch("example", &PatchParams::default(), &Patch::Merge(&change)).await;
            expect_message(refused, &["spec.userRef", "immutable"])?;
            // A reset's delivery is fixed too: an emailed link must not turn into a handed-over
            // (vouched) one after it went out.
            let handed = json!({"spec": {"delivery": "Link"}});
            let refused =
                ns.raw::<MfaReset>().patch("example", &PatchParams::default(), &Patch::Merge(&handed)).await;
            expect_message(refused, &["spec.delivery", "immutable"])?;
            ns.apply(json!({
                "apiVersion": "roster.dev/v1alpha1", "kind": "PasswordReset", "metadata": {"name": "example"},
                "spec": {"userRef": {"name": "jane"}, "reason": "forgot"},
            }))
            .await?;
            let refused = ns
                .raw::<roster::api::PasswordReset>()
                .patch("example", &PatchParams::default(), &Patch::Merge(&handed))
                .await;
            expect_message(refused, &["spec.delivery", "immutable"])
        }),
        trial("admission::resend_only_increases", |ns| async move {
            ns.apply(invite(json!({"userRef": {"name": "jane"}, "resend": 2}))).await?;
            let lower = json!({"spec": {"resend": 1}});
            let refused =
                ns.raw::<UserInvite>().patch("example", &PatchParams::default(), &Patch::Merge(&lower)).await;
            expect_message(refused, &["spec.resend", "only be increased"])
        }),
        trial("admission::oidc_clients_are_checked_field_by_field", |ns| async move {
            let app = "https://app.example.com/cb";
            for uri in [
                "http://app.example.com/cb",
                "https://app.example.com/cb#top",
                "/cb",
                "ftp://app.example.com/cb",
                "https://app.example.com@evil.example.net/cb",
                "http://127.0.0.2/cb",
            ] {
                let spec = json!({"redirectUris": [uri]});
                expect_rejected(&ns, oidc(spec), &["spec.redirectUris", "absolute https URL"]).await?;
            }
            expect_rejected(&ns, oidc(json!({"redirectUris": []})), &["spec.redirectUris"]).await?;
            let uris: Vec<String> = (0..17).map(|i| format!("https://app.example.com/{i}")).collect();
            expect_rejected(&ns, oidc(json!({"redirectUris": uris})), &["spec.redirectUris", "Too many"])
                .await?;
            let spec = json!({"redirectUris": [app], "postLogoutRedirectUris": ["http://app.example.com/"]});
            expect_rejected(&ns, oidc(spec), &["spec.postLogoutRedirectUris", "absolute https URL"]).await?;
            let spec = json!({"redirectUris": [app], "public": true, "secretRef": {"name": "mine"}});
            expect_rejected(&ns, oidc(spec), &["a public client has no secret"]).await?;
            let spec = json!({"redirectUris": [app], "secretRef": {"name": "example-oidc"}});
            expect_rejected(&ns, oidc(spec), &["secretRef must not name <name>-oidc"]).await?;
            let spec = json!({"redirectUris": [app], "scopes": ["openid", "admin"]});
            expect_rejected(&ns, oidc(spec), &["spec.scopes", "Unsupported value", "admin"]).await?;
            let spec = json!({"redirectUris": [app], "tokenLifetimes": {"refreshToken": "9000h"}});
            expect_rejected(&ns, oidc(spec), &["spec.tokenLifetimes.refreshToken", "between 1m and 2160h"])
                .await?;
            let spec = json!({"redirectUris": [app], "userNamespaces": ["Team_A"]});
            expect_rejected(&ns, oidc(spec), &["spec.userNamespaces", "namespace name"]).await?;
            let mut long = oidc(json!({"redirectUris": [app]}));
            long["metadata"]["name"] = json!("n".repeat(59));
            expect_rejected(&ns, long, &["metadata.name must be at most 58 characters"]).await?;

            // A CLI on the person's machine: loopback http; every default filled in.
            let created = ns
                .apply(oidc(json!({"redirectUris": ["http://127.0.0.1:8000/callback"], "public": true})))
                .await?;
            let spec = &created.data["spec"];
            ensure!(
                spec["idTokenSigningAlg"] == "RS256"
                    && spec["scopes"] == json!(["openid", "email", "profile", "groups", "offline_access"])
                    && spec["tokenLifetimes"]
                        == json!({"accessToken": "1h", "idToken": "1h", "refreshToken": "720h"}),
                "OidcClient defaults: {spec}"
            );
            Ok(())
        }),
        trial("admission::defaults_are_applied", |ns| async move {
            let created = ns.apply(user(json!({"email": "a@example.com"}))).await?;
            let spec = &created.data["spec"];
            ensure!(spec["state"] == "Active", "state default: {spec}");
            ensure!(spec["mfa"]["required"] == true, "mfa.required default: {spec}");
            ensure!(spec["invite"]["policy"] == "Auto", "invite.policy default: {spec}");
            let created = ns.apply(invite(json!({"userRef": {"name": "example"}}))).await?;
            let spec = &created.data["spec"];
            ensure!(
                spec["delivery"] == "Email" && spec["ttl"] == "720h" && spec["resend"] == 0,
                "invite defaults: {spec}"
            );
            let created =
                ns.apply(reset(json!({"userRef": {"name": "example"}, "reason": "lost phone"}))).await?;
            ensure!(created.data["spec"]["delivery"] == "Email", "reset defaults: {}", created.data["spec"]);
            Ok(())
        }),
    ]
}

fn user(spec: Value) -> Value {
    json!({"apiVersion": "roster.dev/v1alpha1", "kind": "User", "metadata": {"name": "example"}, "spec": spec})
}

fn invite(spec: Value) -> Value {
    json!({"apiVersion": "roster.dev/v1alpha1", "kind": "UserInvite", "metadata": {"name": "example"}, "spec": spec})
}

fn oidc(spec: Value) -> Value {
    json!({"apiVersion": "roster.dev/v1alpha1", "kind": "OidcClient", "metadata": {"name": "example"}, "spec": spec})
}

fn reset(spec: Value) -> Value {
    json!({"apiVersion": "roster.dev/v1alpha1", "kind": "MfaReset", "metadata": {"name": "example"}, "spec": spec})
}

/// Creates `manifest` and expects the API server to refuse it with a message containing
/// every one of `needles`.
async fn expect_rejected(ns: &Ns, manifest: Value, needles: &[&str]) -> anyhow::Result<()> {
    let object = serde_json::from_value(manifest)?;
    let api = match object_kind(&object) {
        "User" => ns.raw::<User>(),
        "UserInvite" => ns.raw::<UserInvite>(),
        "OidcClient" => ns.raw::<OidcClient>(),
        _ => ns.raw::<MfaReset>(),
    };
    let created = api.create(&PostParams::default(), &object).await;
    expect_message(created, needles).with_context(|| {
        format!("creating {} {}", object_kind(&object), object.metadata.name.as_deref().unwrap_or_default())
    })
}

fn object_kind(object: &kube::core::DynamicObject) -> &str {
    object.types.as_ref().map_or("", |t| t.kind.as_str())
}

fn expect_message<T: std::fmt::Debug>(
    result: Result<T, kube::Error>,
    needles: &[&str],
) -> anyhow::Result<()> {
    match result {
        Ok(object) => bail!("the API server accepted what it should refuse: {object:?}"),
        Err(kube::Error::Api(status)) => {
            ensure!(status.code == 422, "expected 422 Invalid, got {}: {}", status.code, status.message);
            for needle in needles {
                ensure!(
                    status.message.contains(needle),
                    "message {:?} does not mention {needle:?}",
                    status.message
                );
            }
            Ok(())
        }
        Err(e) => bail!("expected a refusal from the API server, got {e}"),
    }
}
