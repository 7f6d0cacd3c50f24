//! The issuer against a relying party nobody here wrote: the `openidconnect` crate discovers
//! roster, sends a person to the sign-in page (driven as a browser without JavaScript would:
//! the form's hidden fields and its cookie), redeems the code with PKCE, verifies the ID
//! token against the JWKS, refreshes, and reads userinfo. The tests reach the operator at the
//! shared harness issuer URL through an HTTP client that sends those requests to its portal
//! port.

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use libtest_mimic::Trial;
use openidconnect::DeviceAuthorizationUrl;
use openidconnect::core::CoreDeviceAuthorizationResponse;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreRevocableToken};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, RefreshToken, RevocationUrl, Scope, TokenResponse,
};
use roster::api::{OidcClient, User};
use roster::oidc::exchange::DEVICE_GRANT;
use serde_json::{Value, json};

use crate::harness::{ISSUER, Ns, Operator, condition, poll_until, shared, trial, wait_for};
use crate::kubernetes::sign_in;
use crate::lifecycle::enrolled;
use crate::portal::{PASSWORD, code, next_code, onboard};
use roster::oidc::keys::{KEEP_RETIRED, KEYS, Schedule, StoredKey, generate};

const REDIRECT: &str = "http://127.0.0.1:8400/callback";
const BYE: &str = "http://127.0.0.1:8400/signed-out";

/// Every code and token the issuer handed out in these tests: the hygiene check looks for
/// them in the operators' logs.
pub static ISSUED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

pub fn note(secret: &str) {
    ISSUED.lock().unwrap_or_else(|p| p.into_inner()).push(secret.to_owned());
}

pub fn note_tokens(tokens: &openidconnect::core::CoreTokenResponse) {
    note(tokens.access_token().secret());
    if let Some(refresh) = tokens.refresh_token() {
        note(refresh.secret());
    }
    if let Some(id) = tokens.id_token() {
        note(&id.to_string());
    }
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("oidc::a_relying_party_signs_a_person_in_refreshes_and_reads_userinfo", |ns| async move {
            let totp = onboard(&ns, "jane", json!({"groups": ["dev"], "givenName": "Jane"})).await?;
            let user = ns.api::<User>().get("jane").await?;
            let (client, _) = registered(&ns, "app", json!({})).await?;
            let flow = SignIn::start(&client, &["email", "profile", "groups", "offline_access"]).await?;
            let page = flow.page().await?;
            ensure!(page.html.contains("Sign in"), "not the sign-in page: {}", page.html);
            let wrong = page
                .submit(&format!("jane@{}", crate::harness::ALLOWED_DOMAIN), "wrong password", &code(&totp)?)
                .await?;
            ensure!(
                wrong.status == 401 && wrong.location.is_none(),
                "a wrong password: {} {:?}",
                wrong.status,
                wrong.location
            );
            let email = user.spec.email.clone();
            let answer = page.submit(&email, PASSWORD, &next_code(&totp)?).await?;
            let (code_value, state) = answer.code()?;
            ensure!(state == flow.csrf.secret().as_str(), "state not passed through");
            let tokens = client
                .exchange_code(AuthorizationCode::new(code_value.clone()))?
                .set_pkce_verifier(flow.verifier())
                .request_async(&http())
                .await
                .context("the code exchange")?;
            note_tokens(&tokens);
            let id_token = tokens.id_token().context("no ID token")?;
            let claims = id_token.claims(&client.id_token_verifier(), &flow.nonce).context("the ID token")?;
            ensure!(claims.subject().as_str() == user.uid().unwrap_or_default(), "sub is not the User's uid");
            ensure!(claims.email().map(|e| e.as_str()) == Some(email.as_str()), "email");
            ensure!(claims.auth_time().is_some(), "auth_time");
            let amr: Vec<String> =
                claims.auth_method_refs().into_iter().flatten().map(|a| a.to_string()).collect();
            ensure!(amr == ["pwd", "otp"], "amr {amr:?}");
            let raw = jwt_claims(&id_token.to_string())?;
            ensure!(raw["groups"] == json!(["dev"]) && raw["given_name"] == "Jane", "{raw}");

            let info = userinfo(tokens.access_token().secret()).await?;
            ensure!(
                info.0 == 200 && info.1["email"] == email.as_str() && info.1["groups"] == json!(["dev"]),
                "{info:?}"
            );

            // Refresh: a new pair; the spent refresh token revokes the family.
            let first = tokens.refresh_token().context("no refresh token")?.clone();
            let refreshed =
                client.exchange_refresh_token(&first)?.request_async(&http()).await.context("refresh")?;
            note_tokens(&refreshed);
            let second = refreshed.refresh_token().context("no rotated refresh token")?.clone();
            ensure!(second.secret() != first.secret(), "the refresh token did not rotate");
            ensure!(refreshed.id_token().is_some(), "no ID token on refresh");
            ensure!(refresh(&client, &first).await.is_err(), "a spent refresh token worked");
            ensure!(refresh(&client, &second).await.is_err(), "the family survived the reuse");
            ensure!(userinfo(refreshed.access_token().secret()).await?.0 == 401, "userinfo after revocation");

            // A code presented twice: refused, and what it gave is revoked. (Someone without
            // a second factor, so that the sign-ins below need no new TOTP step each.)
            onboard(&ns, "joe", json!({"mfa": {"required": false}})).await?;
            let email = ns.api::<User>().get("joe").await?.spec.email;
            let again = SignIn::start(&client, &["offline_access"]).await?;
            let (code2, _) = again.page().await?.submit(&email, PASSWORD, "").await.and_then(|a| a.code())?;
            let tokens = client
                .exchange_code(AuthorizationCode::new(code2.clone()))?
                .set_pkce_verifier(again.verifier())
                .request_async(&http())
                .await?;
            note_tokens(&tokens);
            let replay = client
                .exchange_code(AuthorizationCode::new(code2))?
                .set_pkce_verifier(again.verifier())
                .request_async(&http())
                .await;
            ensure!(replay.is_err(), "a code worked twice");
            let refresh_token = tokens.refresh_token().context("no refresh token")?;
            ensure!(refresh(&client, refresh_token).await.is_err(), "tokens of a replayed code still work");

            // Deactivation ends what a sign-in gave.
            let third = SignIn::start(&client, &["offline_access"]).await?;
            let (code3, _) = third
                .page()
                .await?
                .submit("joe", PASSWORD, "")
                .await
                .and_then(|a| a.code())
                .context("username sign-in")?;
            let tokens = client
                .exchange_code(AuthorizationCode::new(code3))?
                .set_pkce_verifier(third.verifier())
                .request_async(&http())
                .await?;
            note_tokens(&tokens);
            let patch = json!({"spec": {"state": "Inactive"}});
            ns.api::<User>().patch("joe", &PatchParams::default(), &Patch::Merge(&patch)).await?;
            wait_for(&ns.raw::<User>(), "joe", "INACTIVE", |u| u.data["status"]["phase"] == "INACTIVE")
                .await?;
            ensure!(
                userinfo(tokens.access_token().secret()).await?.0 == 401,
                "userinfo for an inactive user"
            );
            ensure!(
                refresh(&client, tokens.refresh_token().context("refresh")?).await.is_err(),
                "refresh for an inactive user"
            );
            Ok(())
        }),
        trial("oidc::one_persons_code_or_refresh_token_never_acts_for_another", |ns| async move {
            // Tokens are `locator.secret`: a thief holding one person's tries it, or its
            // secret joined to the other person's locator, where the other's would go.
            let (client, _) = registered(&ns, "pair", json!({})).await?;
            let mut people = Vec::new();
            for name in ["ada", "bo"] {
                onboard(&ns, name, json!({"mfa": {"required": false}})).await?;
                let user = ns.api::<User>().get(name).await?;
                let flow = SignIn::start(&client, &["offline_access"]).await?;
                let answer = flow.page().await?.submit(&user.spec.email, PASSWORD, "").await?;
                people.push((user, flow, answer));
            }
            let [(ada, ada_flow, ada_answer), (bo, bo_flow, bo_answer)] = &people[..] else {
                bail!("two people")
            };
            let (ada_code, bo_code) = (ada_answer.code()?.0, bo_answer.code()?.0);
            let (id, secret) = credentials_of(&ns, "pair").await?;
            let spliced_codes = crate::account::spliced_pair(&ada_code, &bo_code)?;
            let mut tries = Vec::new();
            for (code, flow) in spliced_codes.iter().zip([bo_flow, ada_flow]).chain([(&ada_code, bo_flow)]) {
                let verifier = flow.verifier().secret().clone();
                let form = [
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", &verifier),
                ];
                tries.push(token_answer(&id, &secret, &form).await?);
            }
            ensure!(
                tries.iter().all(|(status, body)| *status == 400 && body["error"] == "invalid_grant"),
                "spliced codes, and ada's with bo's PKCE verifier: {tries:?}"
            );
            // Neither real code was spent or spoilt by the attempts; each gives its own person.
            let mut refresh_tokens = Vec::new();
            for (user, flow, answer) in [(ada, ada_flow, ada_answer), (bo, bo_flow, bo_answer)] {
                let tokens = flow.redeem(&client, answer).await?;
                let id_token = tokens.id_token().context("no ID token")?;
                let claims = id_token.claims(&client.id_token_verifier(), &flow.nonce)?;
                ensure!(claims.subject().as_str() == user.uid().unwrap_or_default(), "another person's sub");
                let info = userinfo(tokens.access_token().secret()).await?;
                ensure!(
                    info.0 == 200 && info.1["sub"] == user.uid().unwrap_or_default().as_str(),
                    "{info:?}"
                );
                refresh_tokens.push(tokens.refresh_token().context("no refresh token")?.secret().clone());
            }
            for spliced in crate::account::spliced_pair(&refresh_tokens[0], &refresh_tokens[1])? {
                let form = [("grant_type", "refresh_token"), ("refresh_token", spliced.as_str())];
                let (status, body) = token_answer(&id, &secret, &form).await?;
                ensure!(
                    status == 400 && body["error"] == "invalid_grant",
                    "a spliced refresh token: {status} {body}"
                );
            }
            for token in &refresh_tokens {
                refresh(&client, &RefreshToken::new(token.clone()))
                    .await
                    .context("a refresh token spoilt by a splice")?;
            }
            Ok(())
        }),
        trial("oidc::a_session_signs_in_a_second_client_until_the_person_signs_out", |ns| async move {
            onboard(&ns, "sam", json!({"mfa": {"required": false}})).await?;
            let user = ns.api::<User>().get("sam").await?;
            let logout = json!({"postLogoutRedirectUris": [BYE]});
            let (one, one_id) = registered(&ns, "one", logout.clone()).await?;
            let (two, two_id) = registered(&ns, "two", logout).await?;

            // Signing in to the first client starts a session.
            let first = SignIn::start(&one, &["offline_access"]).await?;
            let answer = first.page().await?.submit("sam", PASSWORD, "").await?;
            let session = answer.cookie("__Host-roster_session").context("no session cookie")?;
            note(session.split_once('=').map_or("", |(_, v)| v));
            let one_tokens = first.redeem(&one, &answer).await?;
            let one_id_token = one_tokens.id_token().context("no ID token")?.to_string();
            let one_claims = jwt_claims(&one_id_token)?;

            // The second client signs the person in without a form; auth_time is the session's.
            let second = SignIn::start(&two, &["offline_access"]).await?;
            let silent = second.visit(Some(&session), "&prompt=none").await?;
            let two_tokens = second.redeem(&two, &silent).await.context("a sign-in without a prompt")?;
            let two_claims = jwt_claims(&two_tokens.id_token().context("no ID token")?.to_string())?;
            ensure!(
                two_claims["sub"] == user.uid().unwrap_or_default() && two_claims["aud"] == two_id.as_str(),
                "{two_claims}"
            );
            ensure!(two_claims["auth_time"] == one_claims["auth_time"], "a second sign-in: {two_claims}");
            // Without the cookie: login_required. A fresh sign-in asked for: the form.
            let none = SignIn::start(&two, &[]).await?.visit(None, "&prompt=none").await?;
            ensure!(
                none.location.as_deref().is_some_and(|l| l.contains("error=login_required")),
                "{:?}",
                none.location
            );
            for fresh in ["&prompt=login", "&max_age=0"] {
                let asked = SignIn::start(&two, &[]).await?.visit(Some(&session), fresh).await?;
                ensure!(
                    asked.status == 200
                        && asked.location.is_none()
                        && asked.html.contains("name=\"password\""),
                    "{fresh}: {}",
                    asked.status
                );
            }

            // The state lives in Secrets: a session owned by the User, grants owned by it.
            let secrets = ns.api::<Secret>().list(&Default::default()).await?.items;
            let sessions: Vec<&Secret> =
                secrets.iter().filter(|s| s.name_any().starts_with("sam-session-")).collect();
            ensure!(sessions.len() == 1, "{} sessions", sessions.len());
            let owned = |s: &Secret, uid: Option<String>| {
                s.owner_references().iter().any(|r| Some(r.uid.clone()) == uid)
            };
            ensure!(owned(sessions[0], user.uid()), "the session is not the User's");
            let grants: Vec<&Secret> =
                secrets.iter().filter(|s| s.name_any().starts_with("sam-grant-")).collect();
            ensure!(
                grants.len() == 2 && grants.iter().all(|g| owned(g, sessions[0].uid())),
                "grants: {}",
                grants.len()
            );

            // Revocation (RFC 7009): only the client's own token; then it stops working.
            let two_refresh = two_tokens.refresh_token().context("no refresh token")?;
            let one_refresh = one_tokens.refresh_token().context("no refresh token")?;
            revoke(&two, CoreRevocableToken::RefreshToken(one_refresh.clone())).await?;
            let one_refreshed = one
                .exchange_refresh_token(one_refresh)?
                .request_async(&http())
                .await
                .context("another client's revocation revoked")?;
            note_tokens(&one_refreshed);
            let one_refresh = one_refreshed.refresh_token().context("no refresh token")?.clone();
            revoke(&two, CoreRevocableToken::RefreshToken(two_refresh.clone())).await?;
            ensure!(refresh(&two, two_refresh).await.is_err(), "a revoked refresh token worked");

            // Sign-out without a hint asks first; a hinted one ends the session and its grants
            // and returns to the client's registered address with state.
            let unregistered = browser()
                .get(format!(
                    "{}/logout?client_id={one_id}&post_logout_redirect_uri=https%3A%2F%2Fevil.example.com%2F",
                    shared().portal_url
                ))
                .header("cookie", &session)
                .send()
                .await?;
            ensure!(
                unregistered.status() == 400 && unregistered.headers().get("location").is_none(),
                "{}",
                unregistered.status()
            );
            let ask = browser()
                .get(format!("{}/logout", shared().portal_url))
                .header("cookie", &session)
                .send()
                .await?;
            ensure!(ask.status() == 200 && ask.text().await?.contains("Sign out of"), "no confirmation");
            let still = one
                .exchange_refresh_token(&one_refresh)?
                .request_async(&http())
                .await
                .context("asking ended the session")?;
            note_tokens(&still);
            // The current refresh token: refused after sign-out only because the session ended.
            let one_refresh = still.refresh_token().context("no refresh token")?.clone();
            let bye = browser()
                .get(format!(
                    "{}/logout?id_token_hint={one_id_token}&post_logout_redirect_uri={}&state=st4te",
                    shared().portal_url,
                    urlencoding(BYE)
                ))
                .send()
                .await?;
            let location =
                bye.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            ensure!(location == format!("{BYE}?state=st4te"), "after sign-out: {} {location}", bye.status());

            let one_last = one.exchange_refresh_token(&one_refresh)?.request_async(&http()).await;
            ensure!(one_last.is_err(), "a refresh token outlived its session");
            let after = SignIn::start(&two, &[]).await?.visit(Some(&session), "&prompt=none").await?;
            ensure!(
                after.location.as_deref().is_some_and(|l| l.contains("error=login_required")),
                "the session outlived sign-out"
            );

            // Confirmed in the browser: the form (with its token) ends the session, clears the
            // cookie; without the form token nothing ends.
            let signed = SignIn::start(&one, &[]).await?;
            let answer = signed.page().await?.submit("sam", PASSWORD, "").await?;
            signed.redeem(&one, &answer).await?;
            let session = answer.cookie("__Host-roster_session").context("no session cookie")?;
            note(session.split_once('=').map_or("", |(_, v)| v));
            let ask = browser()
                .get(format!("{}/logout", shared().portal_url))
                .header("cookie", &session)
                .send()
                .await?;
            let form_cookie = Answer::of(ask).await?;
            let form_cookie_value = form_cookie.cookie("roster_form").context("no form cookie")?;
            let fields = hidden_fields(&form_cookie.html);
            let both = format!("{session}; {form_cookie_value}");
            let forged = browser()
                .post(format!("{}/logout", shared().portal_url))
                .header("cookie", &both)
                .form(&[("form_token", "forged")])
                .send()
                .await?;
            ensure!(forged.status() == 200 && forged.text().await?.contains("Sign out of"), "a forged form");
            let still = SignIn::start(&two, &[]).await?.visit(Some(&session), "&prompt=none").await?;
            ensure!(
                still.location.as_deref().is_some_and(|l| l.contains("code=")),
                "a forged form signed out"
            );
            note(&still.code().map(|(c, _)| c).unwrap_or_default());
            let confirmed = browser()
                .post(format!("{}/logout", shared().portal_url))
                .header("cookie", &both)
                .form(&fields)
                .send()
                .await?;
            let confirmed = Answer::of(confirmed).await?;
            ensure!(
                confirmed.status == 200 && confirmed.html.contains("You are signed out"),
                "{}",
                confirmed.status
            );
            ensure!(
                confirmed
                    .cookies
                    .iter()
                    .any(|c| c.starts_with("__Host-roster_session=;") && c.contains("Max-Age=0")),
                "the cookie was not cleared: {:?}",
                confirmed.cookies
            );
            let gone = SignIn::start(&two, &[]).await?.visit(Some(&session), "&prompt=none").await?;
            ensure!(
                gone.location.as_deref().is_some_and(|l| l.contains("error=login_required")),
                "confirmed sign-out"
            );

            // A session that ends is removed, and its grants with it.
            let again = SignIn::start(&one, &["offline_access"]).await?;
            let answer = again.page().await?.submit("sam", PASSWORD, "").await?;
            let tokens = again.redeem(&one, &answer).await?;
            let session = answer.cookie("__Host-roster_session").context("no session cookie")?;
            note(session.split_once('=').map_or("", |(_, v)| v));
            let secrets = ns.api::<Secret>().list(&Default::default()).await?.items;
            let live =
                secrets.iter().find(|s| s.name_any().starts_with("sam-session-")).context("no session")?;
            let ended = (k8s_openapi::jiff::Timestamp::now()
                - k8s_openapi::jiff::SignedDuration::from_secs(1))
            .to_string();
            let patch = json!({"stringData": {"expiresAt": ended}});
            ns.api::<Secret>()
                .patch(&live.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            crate::harness::poll_until("the ended session and its grant removed", || async {
                let left = ns.api::<Secret>().list(&Default::default()).await?.items;
                Ok(left.iter().all(|s| {
                    !s.name_any().starts_with("sam-session-") && !s.name_any().starts_with("sam-grant-")
                }))
            })
            .await?;
            ensure!(
                refresh(&one, tokens.refresh_token().context("refresh")?).await.is_err(),
                "refresh after the end"
            );

            // Another person signs in on the same browser: the first one's session ends.
            let sams = SignIn::start(&one, &[]).await?;
            let answer = sams.page().await?.submit("sam", PASSWORD, "").await?;
            let sam_session = answer.cookie("__Host-roster_session").context("no session cookie")?;
            note(sam_session.split_once('=').map_or("", |(_, v)| v));
            note(&answer.code()?.0);
            onboard(&ns, "kay", json!({"mfa": {"required": false}})).await?;
            let kays = SignIn::start(&one, &[]).await?;
            let answer = kays.page().await?.submit_with(Some(&sam_session), "kay", PASSWORD, "").await?;
            note(&answer.code()?.0);
            let left = ns.api::<Secret>().list(&Default::default()).await?.items;
            ensure!(
                !left.iter().any(|s| s.name_any().starts_with("sam-session-"))
                    && left.iter().any(|s| s.name_any().starts_with("kay-session-")),
                "sam's session outlived kay's sign-in on the same browser"
            );
            let asked = SignIn::start(&two, &[]).await?.visit(Some(&sam_session), "&prompt=none").await?;
            ensure!(
                asked.location.as_deref().is_some_and(|l| l.contains("error=login_required")),
                "sam's cookie still signs in: {:?}",
                asked.location
            );
            Ok(())
        }),
        trial(
            "oidc::a_rotation_by_another_replica_signs_anew_and_keeps_the_old_key_published",
            |ns| async move {
                // An operator of its own for this namespace, with keys of its own (the shared keys
                // sign every other test's tokens), at the same issuer URL.
                let dir = shared().work_dir.join(&ns.name);
                std::fs::create_dir_all(&dir)?;
                let keys_secret = format!("{}-keys", ns.name);
                let flags = [
                    format!("--watch-namespaces={}", ns.name),
                    format!("--signing-keys-secret=roster-system/{keys_secret}"),
                ];
                let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                let operator =
                    Operator::start(&shared().kubeconfig, &dir, "operator-rotation", &flags).await?;
                let address = enrolled(&ns, "rita", json!({"mfa": {"required": false}}), None).await?;
                ns.apply(json!({
                    "apiVersion": "roster.dev/v1alpha1", "kind": "OidcClient", "metadata": {"name": "cli"},
                    "spec": {"public": true, "redirectUris": ["http://127.0.0.1/callback"]},
                }))
                .await?;
                wait_for(&ns.raw::<OidcClient>(), "cli", "Ready", |c| {
                    condition(c, "Ready")["status"] == "True"
                })
                .await?;
                let client_id = format!("{}.cli", ns.name);
                let portal = operator.portal_url.clone();
                let kid = |token: &str| -> anyhow::Result<String> {
                    Ok(jwt_part(token, 0)?["kid"].as_str().unwrap_or_default().to_owned())
                };
                let before = sign_in(&portal, ISSUER, &client_id, &address).await?.context("no ID token")?;
                note(&before);
                let old = kid(&before)?;

                // Another replica rotates: the current keys retired, new ones first in line.
                let secrets = kube::Api::<Secret>::namespaced(ns.client.clone(), "roster-system");
                let mut secret = secrets.get(&keys_secret).await?;
                let stored: Vec<StoredKey> = serde_json::from_slice(
                    &secret.data.as_ref().and_then(|d| d.get(KEYS)).context("no keys in the Secret")?.0,
                )?;
                let now = k8s_openapi::jiff::Timestamp::now();
                let schedule =
                    Schedule { rotation: k8s_openapi::jiff::SignedDuration::ZERO, keep: KEEP_RETIRED };
                let rotated = roster::oidc::keys::rotated(&stored, now, schedule, |alg| generate(alg, now))?
                    .context("nothing rotated")?;
                secret.data =
                    Some([(KEYS.to_owned(), k8s_openapi::ByteString(serde_json::to_vec(&rotated)?))].into());
                secrets.replace(&keys_secret, &Default::default(), &secret).await?;

                // New sign-ins are signed with the new key once this replica has seen it; the old
                // key stays published for the tokens it signed.
                let latest = std::cell::RefCell::new(String::new());
                poll_until("a token signed with the new key", || async {
                    let token =
                        sign_in(&portal, ISSUER, &client_id, &address).await?.context("no ID token")?;
                    note(&token);
                    let fresh = kid(&token)? != old;
                    *latest.borrow_mut() = token;
                    Ok(fresh)
                })
                .await?;
                let after = latest.into_inner();
                let published: Value = reqwest::get(format!("{portal}/keys")).await?.json().await?;
                let kids: Vec<&str> = published["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k["kid"].as_str())
                    .collect();
                let new = kid(&after)?;
                ensure!(
                    kids.contains(&old.as_str()) && kids.contains(&new.as_str()),
                    "JWKS {kids:?}: old {old}, new {new}"
                );
                ensure!(
                    rotated.iter().any(|k| k.kid == new && k.retired_at.is_none()),
                    "signed with {new}, which is not the rotated current key"
                );
                // The token signed before the rotation still verifies against the keys now
                // published, as a relying party checks it.
                let jwks: openidconnect::core::CoreJsonWebKeySet = serde_json::from_value(published)?;
                let verifier = openidconnect::core::CoreIdTokenVerifier::new_public_client(
                    ClientId::new(client_id.clone()),
                    IssuerUrl::new(ISSUER.to_owned())?,
                    jwks,
                );
                let old_token: openidconnect::core::CoreIdToken = before.parse()?;
                old_token
                    .claims(&verifier, |_: Option<&Nonce>| Ok(()))
                    .context("the token signed before the rotation no longer verifies")?;
                Ok(())
            },
        ),
        trial("oidc::a_device_without_a_browser_signs_in_once_the_person_allows_it", |ns| async move {
            let totp = onboard(&ns, "dev", json!({"groups": ["dev"]})).await?;
            let email = ns.api::<User>().get("dev").await?.spec.email;
            let (client, client_id) = registered(&ns, "tv", json!({"deviceAuthorization": true})).await?;
            let discovered: Value = browser()
                .get(local(&format!("{ISSUER}/.well-known/openid-configuration")))
                .send()
                .await?
                .json()
                .await?;
            let endpoint =
                discovered["device_authorization_endpoint"].as_str().context("no device endpoint")?;
            ensure!(
                discovered["grant_types_supported"]
                    .as_array()
                    .is_some_and(|g| g.iter().any(|t| t == DEVICE_GRANT)),
                "{discovered}"
            );
            // A client that did not ask for the grant does not get it.
            let (plain, _) = registered(&ns, "plain", json!({})).await?;
            let refused: Result<CoreDeviceAuthorizationResponse, _> = plain
                .set_device_authorization_url(DeviceAuthorizationUrl::new(endpoint.to_owned())?)
                .exchange_device_code()
                .request_async(&http())
                .await;
            ensure!(
                refused.as_ref().err().is_some_and(|e| format!("{e:?}").contains("unauthorized_client")),
                "a client without deviceAuthorization: {refused:?}"
            );
            let client =
                client.set_device_authorization_url(DeviceAuthorizationUrl::new(endpoint.to_owned())?);
            let details: CoreDeviceAuthorizationResponse = client
                .exchange_device_code()
                .add_scope(Scope::new("email".into()))
                .add_scope(Scope::new("offline_access".into()))
                .request_async(&http())
                .await
                .context("the device authorization request")?;
            let device_code = details.device_code().secret().clone();
            note(&device_code);
            let user_code = details.user_code().secret().clone();
            note(&user_code);
            ensure!(user_code.len() == 9 && user_code.as_bytes()[4] == b'-', "user code {user_code}");

            // Before the person allows it: pending.
            let poll = || async {
                let secret = credentials_of(&ns, "tv").await?.1;
                token_answer(
                    &client_id,
                    &secret,
                    &[("grant_type", DEVICE_GRANT), ("device_code", device_code.as_str())],
                )
                .await
            };
            let (status, body) = poll().await?;
            ensure!(status == 400 && body["error"] == "authorization_pending", "{status} {body}");

            // The person, in a browser elsewhere: a wrong code, then the right one, then signs in.
            let complete = details.verification_uri_complete().context("no complete URI")?.secret().clone();
            let page = browser().get(local(&complete)).send().await?;
            let cookie = set_cookie(page.headers(), "roster_form").context("no form cookie")?;
            let html = page.text().await?;
            ensure!(html.contains(&user_code), "the code is not filled in: {html}");
            let mut fields = hidden_fields(&html);
            let post = |form: Vec<(String, String)>, cookie: String| async move {
                let answer = browser()
                    .post(format!("{}/device", shared().portal_url))
                    .header("cookie", cookie)
                    .form(&form)
                    .send()
                    .await?;
                let status = answer.status().as_u16();
                let session = set_cookie(answer.headers(), "__Host-roster_session");
                anyhow::Ok((status, answer.text().await?, session))
            };
            let with = |fields: &[(String, String)], extra: &[(&str, &str)]| {
                let mut form = fields.to_vec();
                form.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
                form
            };
            let (status, html, _) =
                post(with(&fields, &[("user_code", "BCDF-GHJK")]), cookie.clone()).await?;
            ensure!(status == 400 && html.contains("not valid"), "a wrong code: {status}");
            let foreign = browser()
                .post(format!("{}/device", shared().portal_url))
                .header("cookie", cookie.clone())
                .header("origin", "https://evil.example.com")
                .form(&with(&fields, &[("user_code", &user_code)]))
                .send()
                .await?;
            ensure!(foreign.status() == 403, "a post from another origin: {}", foreign.status());
            let (status, html, _) =
                post(with(&fields, &[("user_code", &user_code.to_lowercase())]), cookie.clone()).await?;
            ensure!(
                status == 200 && html.contains("id=\"client\">tv<") && html.contains("name=\"password\""),
                "{status} {html}"
            );
            fields = hidden_fields(&html);
            let (status, html, _) = post(
                with(
                    &fields,
                    &[("identifier", &email), ("password", "wrong password"), ("code", &code(&totp)?)],
                ),
                cookie.clone(),
            )
            .await?;
            ensure!(status == 401 && html.contains("did not work"), "a wrong password: {status}");
            let (status, html, session) = post(
                with(
                    &hidden_fields(&html),
                    &[("identifier", &email), ("password", PASSWORD), ("code", &next_code(&totp)?)],
                ),
                cookie.clone(),
            )
            .await?;
            ensure!(status == 200 && html.contains("Your device is signed in"), "{status} {html}");
            let session = session.context("no session cookie")?;
            note(session.split_once('=').map_or("", |(_, v)| v));

            // The device's next poll gets the tokens, through the crate.
            let tokens = client
                .exchange_device_access_token(&details)?
                .request_async(&http(), tokio::time::sleep, Some(std::time::Duration::from_secs(30)))
                .await
                .context("the device's token request")?;
            note_tokens(&tokens);
            let claims = jwt_claims(&tokens.id_token().context("no ID token")?.to_string())?;
            ensure!(claims["email"] == email.as_str() && claims["amr"] == json!(["pwd", "otp"]), "{claims}");
            ensure!(tokens.refresh_token().is_some(), "no refresh token for offline_access");
            let (status, body) = poll().await?;
            ensure!(
                status == 400 && body["error"] == "invalid_grant",
                "a device code used twice: {status} {body}"
            );

            // A second device with the browser signed in: one click, no password.
            let second: CoreDeviceAuthorizationResponse =
                client.exchange_device_code().request_async(&http()).await?;
            note(second.device_code().secret());
            let page = browser().get(local(&format!("{ISSUER}/device"))).send().await?;
            let cookie = set_cookie(page.headers(), "roster_form").context("no form cookie")?;
            let both = format!("{cookie}; {session}");
            let fields = hidden_fields(&page.text().await?);
            let (status, html, _) =
                post(with(&fields, &[("user_code", second.user_code().secret())]), both.clone()).await?;
            ensure!(
                status == 200 && html.contains("id=\"who\">") && !html.contains("name=\"password\""),
                "{status} {html}"
            );
            let (status, html, _) = post(hidden_fields(&html), both).await?;
            ensure!(status == 200 && html.contains("Your device is signed in"), "{status} {html}");
            let tokens = client
                .exchange_device_access_token(&second)?
                .request_async(&http(), tokio::time::sleep, Some(std::time::Duration::from_secs(30)))
                .await?;
            note_tokens(&tokens);
            Ok(())
        }),
        trial("oidc::requests_outside_the_registration_are_refused_without_redirecting", |ns| async move {
            let totp = onboard(&ns, "ann", json!({"groups": ["dev"]})).await?;
            let email = ns.api::<User>().get("ann").await?.spec.email;
            let (client, _) = registered(&ns, "ops", json!({"allowedGroups": ["ops"]})).await?;
            let flow = SignIn::start(&client, &[]).await?;
            // Another redirect URI: a page, no redirect.
            let evil = flow.url.replace("127.0.0.1%3A8400", "evil.example.com");
            let response = browser().get(local(&evil)).send().await?;
            ensure!(
                response.status() == 400 && response.headers().get("location").is_none(),
                "{}",
                response.status()
            );
            // Not PKCE: back to the client with an error.
            let plain = flow.url.replace("code_challenge_method=S256", "code_challenge_method=plain");
            let response = browser().get(local(&plain)).send().await?;
            let location = response.headers().get("location").context("no redirect")?.to_str()?.to_owned();
            ensure!(
                location.starts_with(REDIRECT) && location.contains("error=invalid_request"),
                "{location}"
            );
            // Outside allowedGroups: told why, and the link gives the client access_denied.
            let denied = flow.page().await?.submit(&email, PASSWORD, &next_code(&totp)?).await?;
            ensure!(
                denied.status == 403 && denied.html.contains("may not use this application"),
                "{}: {}",
                denied.status,
                denied.html
            );
            ensure!(denied.html.contains("error=access_denied"), "no access_denied link: {}", denied.html);
            ensure!(
                ns.api::<Secret>()
                    .list(&Default::default())
                    .await?
                    .items
                    .iter()
                    .all(|s| !s.name_any().contains("-grant-") && !s.name_any().contains("-session-")),
                "a grant or session was made for a refused sign-in"
            );

            // At the token endpoint: a wrong verifier, a wrong client secret, an expired code.
            onboard(&ns, "ben", json!({"mfa": {"required": false}})).await?;
            let (app, _) = registered(&ns, "app", json!({})).await?;
            let flow = SignIn::start(&app, &[]).await?;
            let (code1, _) = flow.page().await?.submit("ben", PASSWORD, "").await?.code()?;
            note(&code1);
            let wrong = openidconnect::PkceCodeVerifier::new("w".repeat(43));
            ensure!(!redeems(&app, code1, wrong).await?, "a wrong PKCE verifier redeemed a code");
            let flow = SignIn::start(&app, &[]).await?;
            let (code2, _) = flow.page().await?.submit("ben", PASSWORD, "").await?.code()?;
            note(&code2);
            let impostor = app.clone().set_client_secret(ClientSecret::new("x".repeat(43)));
            ensure!(
                !redeems(&impostor, code2, flow.verifier()).await?,
                "a wrong client secret redeemed a code"
            );
            let flow = SignIn::start(&app, &[]).await?;
            let (code3, _) = flow.page().await?.submit("ben", PASSWORD, "").await?.code()?;
            note(&code3);
            let past = (k8s_openapi::jiff::Timestamp::now()
                - k8s_openapi::jiff::SignedDuration::from_secs(1))
            .to_string();
            for grant in ns.api::<Secret>().list(&Default::default()).await?.items {
                if grant.name_any().starts_with("ben-grant-") {
                    let patch = json!({"stringData": {"codeExpiresAt": past}});
                    ns.api::<Secret>()
                        .patch(&grant.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                }
            }
            ensure!(!redeems(&app, code3, flow.verifier()).await?, "an expired code was redeemed");

            // A lock ends what a sign-in gave: the refresh token fails and the session ends.
            let flow = SignIn::start(&app, &["offline_access"]).await?;
            let answer = flow.page().await?.submit("ben", PASSWORD, "").await?;
            let tokens = flow.redeem(&app, &answer).await?;
            let sessions = || async {
                let all = ns.api::<Secret>().list(&Default::default()).await?.items;
                anyhow::Ok(all.iter().filter(|s| s.name_any().starts_with("ben-session-")).count())
            };
            let before = sessions().await?;
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            crate::lifecycle::write_facts(&ns, "ben", json!({"lockedAt": now, "failedLogins": "5"})).await?;
            wait_for(&ns.raw::<User>(), "ben", "locked", |u| condition(u, "Ready")["reason"] == "LockedOut")
                .await?;
            ensure!(
                refresh(&app, tokens.refresh_token().context("no refresh token")?).await.is_err(),
                "a locked person's refresh token worked"
            );
            ensure!(sessions().await? == before - 1, "the lock did not end the session");

            // A locked person with the right password and an unused code: told why, no code.
            let cat = onboard(&ns, "cat", json!({})).await?;
            let cat_email = ns.api::<User>().get("cat").await?.spec.email;
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            crate::lifecycle::write_facts(&ns, "cat", json!({"lockedAt": now, "failedLogins": "5"})).await?;
            wait_for(&ns.raw::<User>(), "cat", "locked", |u| condition(u, "Ready")["reason"] == "LockedOut")
                .await?;
            let locked = SignIn::start(&app, &[])
                .await?
                .page()
                .await?
                .submit(&cat_email, PASSWORD, &next_code(&cat)?)
                .await?;
            ensure!(
                locked.status == 403
                    && locked.location.is_none()
                    && locked.html.contains("error=access_denied"),
                "a locked person: {} {:?}",
                locked.status,
                locked.location
            );
            Ok(())
        }),
    ]
}

/// An OidcClient `name` with the loopback redirect URI, once Ready; the relying party
/// configured with its ID and secret.
pub async fn registered(ns: &Ns, name: &str, extra: Value) -> anyhow::Result<(Rp, String)> {
    let mut spec = json!({"redirectUris": ["http://127.0.0.1/callback"]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    ns.apply(json!({
        "apiVersion": "roster.dev/v1alpha1", "kind": "OidcClient",
        "metadata": {"name": name}, "spec": spec,
    }))
    .await?;
    wait_for(&ns.raw::<OidcClient>(), name, "Ready", |c| condition(c, "Ready")["status"] == "True").await?;
    let (id, client_secret) = credentials_of(ns, name).await?;
    let metadata = CoreProviderMetadata::discover_async(IssuerUrl::new(ISSUER.to_owned())?, &http())
        .await
        .context("discovery")?;
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(id.clone()),
        Some(ClientSecret::new(client_secret)),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.to_owned())?);
    Ok((client, id))
}

/// The client ID and secret roster generated for confidential OidcClient `name`.
pub async fn credentials_of(ns: &Ns, name: &str) -> anyhow::Result<(String, String)> {
    let secret = ns.api::<Secret>().get(&format!("{name}-oidc")).await?;
    let value = |key: &str| -> anyhow::Result<String> {
        let data = secret.data.as_ref().and_then(|d| d.get(key)).with_context(|| format!("no {key}"))?;
        Ok(String::from_utf8(data.0.clone())?)
    };
    Ok((value("clientID")?, value("clientSecret")?))
}

pub type Rp = openidconnect::core::CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// One authorization request in flight.
pub struct SignIn {
    pub url: String,
    csrf: CsrfToken,
    nonce: Nonce,
    verifier: String,
}

impl SignIn {
    pub async fn start(client: &Rp, scopes: &[&str]) -> anyhow::Result<Self> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        note(verifier.secret());
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in scopes {
            request = request.add_scope(Scope::new((*scope).to_owned()));
        }
        let (url, csrf, nonce) = request.set_pkce_challenge(challenge).url();
        Ok(Self { url: url.to_string(), csrf, nonce, verifier: verifier.secret().clone() })
    }

    fn verifier(&self) -> openidconnect::PkceCodeVerifier {
        openidconnect::PkceCodeVerifier::new(self.verifier.clone())
    }

    /// `GET /authorize` with `extra` query parameters and, maybe, a cookie.
    pub async fn visit(&self, cookie: Option<&str>, extra: &str) -> anyhow::Result<Answer> {
        let mut request = browser().get(local(&format!("{}{extra}", self.url)));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        Answer::of(request.send().await?).await
    }

    /// Redeems the code `answer` carries, checks the state, notes the tokens.
    pub async fn redeem(
        &self,
        client: &Rp,
        answer: &Answer,
    ) -> anyhow::Result<openidconnect::core::CoreTokenResponse> {
        let (code, state) = answer.code()?;
        ensure!(state == self.csrf.secret().as_str(), "state not passed through");
        let tokens = client
            .exchange_code(AuthorizationCode::new(code))?
            .set_pkce_verifier(self.verifier())
            .request_async(&http())
            .await
            .context("the code exchange")?;
        note_tokens(&tokens);
        Ok(tokens)
    }

    /// The sign-in page, as a browser gets it.
    pub async fn page(&self) -> anyhow::Result<Page> {
        let response = browser().get(local(&self.url)).send().await?;
        ensure!(response.status() == 200, "GET /authorize: {}", response.status());
        let cookie = set_cookie(response.headers(), "roster_form").context("no form cookie")?;
        let html = response.text().await?;
        Ok(Page { cookie, fields: hidden_fields(&html), html })
    }
}

/// A sign-in page: its hidden fields and the form cookie.
pub struct Page {
    cookie: String,
    fields: Vec<(String, String)>,
    html: String,
}

/// What posting the form (or visiting /authorize) answered.
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    cookies: Vec<String>,
    html: String,
}

impl Page {
    pub async fn submit(&self, identifier: &str, password: &str, code: &str) -> anyhow::Result<Answer> {
        self.submit_with(None, identifier, password, code).await
    }

    /// Submits the form from a browser that also holds `session` (a `name=value` cookie).
    async fn submit_with(
        &self,
        session: Option<&str>,
        identifier: &str,
        password: &str,
        code: &str,
    ) -> anyhow::Result<Answer> {
        let cookie = match session {
            Some(session) => format!("{}; {session}", self.cookie),
            None => self.cookie.clone(),
        };
        let mut form = self.fields.clone();
        form.extend(
            [("identifier", identifier), ("password", password), ("code", code)]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let response = browser()
            .post(format!("{}/authorize", shared().portal_url))
            .header("cookie", cookie)
            .form(&form)
            .send()
            .await?;
        Answer::of(response).await
    }
}

impl Answer {
    async fn of(response: reqwest::Response) -> anyhow::Result<Self> {
        let status = response.status().as_u16();
        let header =
            |name| response.headers().get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned);
        let location = header("location").next();
        let cookies = header("set-cookie").collect();
        Ok(Answer { status, location, cookies, html: response.text().await? })
    }

    /// `name=value` of a cookie the answer set.
    pub fn cookie(&self, name: &str) -> Option<String> {
        cookie_named(self.cookies.iter().map(String::as_str), name)
    }

    /// The code and state the redirect carries.
    fn code(&self) -> anyhow::Result<(String, String)> {
        let Some(location) = &self.location else { bail!("no redirect ({}): {}", self.status, self.html) };
        ensure!(location.starts_with(REDIRECT), "redirected elsewhere: {location}");
        let url = url::Url::parse(location)?;
        let get = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        ensure!(get("iss").as_deref() == Some(ISSUER), "no iss in {location}");
        let code = get("code").context("no code")?;
        note(&code);
        Ok((code, get("state").unwrap_or_default()))
    }
}

/// `name=value` of the cookie `name` a response sets.
pub fn set_cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    cookie_named(headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()), name)
}

/// `name=value` of the cookie `name` among `Set-Cookie` values.
fn cookie_named<'a>(mut set_cookies: impl Iterator<Item = &'a str>, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    set_cookies.find(|c| c.starts_with(&prefix)).and_then(|c| c.split(';').next()).map(str::to_owned)
}

/// The hidden inputs of a page (the portal's templates write `name` before `value`).
pub fn hidden_fields(html: &str) -> Vec<(String, String)> {
    html.split("<input type=\"hidden\" ")
        .skip(1)
        .filter_map(|rest| {
            let name = rest.strip_prefix("name=\"")?.split('"').next()?;
            let value = rest.split("value=\"").nth(1)?.split('"').next()?;
            Some((unescape(name), unescape(value)))
        })
        .collect()
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A URL at the issuer, on the operator's portal port.
pub fn local(url: &str) -> String {
    url.replace(ISSUER, &shared().portal_url)
}

/// A browser that does not follow redirects (the test reads them).
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap_or_default()
}

/// The relying party's HTTP client: requests to the issuer go to the operator's portal port.
pub fn http() -> impl Fn(
    openidconnect::HttpRequest,
) -> std::pin::Pin<
    Box<dyn Future<Output = Result<openidconnect::HttpResponse, reqwest::Error>> + Send>,
> {
    |request: openidconnect::HttpRequest| {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let url = local(&parts.uri.to_string());
            let mut outgoing = browser().request(parts.method, url).body(body);
            for (name, value) in &parts.headers {
                outgoing = outgoing.header(name, value);
            }
            let response = outgoing.send().await?;
            let mut builder = http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = response.bytes().await?.to_vec();
            Ok(builder.body(body).unwrap_or_default())
        })
    }
}

pub async fn refresh(client: &Rp, token: &RefreshToken) -> anyhow::Result<()> {
    client.exchange_refresh_token(token)?.request_async(&http()).await.context("refresh")?;
    Ok(())
}

/// What `/token` answers `form` from the confidential client `id`: the status and the body.
async fn token_answer(id: &str, secret: &str, form: &[(&str, &str)]) -> anyhow::Result<(u16, Value)> {
    let response = browser()
        .post(format!("{}/token", shared().portal_url))
        .basic_auth(id, Some(secret))
        .form(form)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or_default()))
}

/// Whether `client` redeems `code` with `verifier` (the tokens it gets noted).
async fn redeems(
    client: &Rp,
    code: String,
    verifier: openidconnect::PkceCodeVerifier,
) -> anyhow::Result<bool> {
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))?
        .set_pkce_verifier(verifier)
        .request_async(&http())
        .await;
    Ok(tokens.map(|t| note_tokens(&t)).is_ok())
}

/// Revokes `token` as `client` (RFC 7009, through the crate).
async fn revoke(client: &Rp, token: CoreRevocableToken) -> anyhow::Result<()> {
    let url = RevocationUrl::new(format!("{ISSUER}/revoke"))?;
    client
        .clone()
        .set_revocation_url(url)
        .revoke_token(token)?
        .request_async(&http())
        .await
        .context("revocation")?;
    Ok(())
}

fn urlencoding(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

pub async fn userinfo(access_token: &str) -> anyhow::Result<(u16, Value)> {
    let response =
        browser().get(format!("{}/userinfo", shared().portal_url)).bearer_auth(access_token).send().await?;
    Ok((response.status().as_u16(), response.json().await.unwrap_or_default()))
}

/// The claims of a JWT, unverified (the crate verified it already).
fn jwt_claims(token: &str) -> anyhow::Result<Value> {
    jwt_part(token, 1)
}

/// Part `index` of a JWT (0: the header, 1: the claims), decoded, unverified.
fn jwt_part(token: &str, index: usize) -> anyhow::Result<Value> {
    use base64::Engine as _;
    let part = token.split('.').nth(index).context("not a JWT")?;
    Ok(serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part)?)?)
}
