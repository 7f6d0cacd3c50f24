//! Hostile requests at every route of the portal and the issuer, sent over raw TCP so that
//! nothing tidies them first: malformed and mistyped JSON and forms, huge bodies and
//! headers, invalid UTF-8, path tricks, random tokens, cookies and bearer tokens, headers and
//! bodies that never finish arriving. Every answer must come within a deadline and be below 500, and
//! every refusal must say why (a body, or for a bearer token the `WWW-Authenticate`
//! header). The operator must be alive and must not have panicked afterwards.
//! `ROSTER_HTTP_INPUTS` sets how many requests, `ROSTER_HTTP_SEED` repeats a run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::ensure;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use futures::StreamExt;
use libtest_mimic::Trial;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::batch::size;
use crate::harness::{shared, standalone};
use crate::seeded::Rng;

/// Every route, with `{t}` where a token or ID goes.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/invite/{t}"),
    ("POST", "/invite/{t}"),
    ("GET", "/api/v1/invites/{t}"),
    ("POST", "/api/v1/invites/{t}/accept"),
    ("POST", "/api/v1/invites/{t}/totp"),
    ("GET", "/mfa-reset/{t}"),
    ("POST", "/mfa-reset/{t}"),
    ("GET", "/api/v1/mfa-resets/{t}"),
    ("POST", "/api/v1/mfa-resets/{t}/accept"),
    ("POST", "/api/v1/mfa-resets/{t}/totp"),
    ("GET", "/password-reset/{t}"),
    ("POST", "/password-reset/{t}"),
    ("GET", "/forgot-password"),
    ("POST", "/forgot-password"),
    ("POST", "/api/v1/password-resets"),
    ("GET", "/api/v1/password-resets/{t}"),
    ("POST", "/api/v1/password-resets/{t}"),
    ("GET", "/verify-email/{t}"),
    ("POST", "/verify-email/{t}"),
    ("GET", "/api/v1/email-verifications/{t}"),
    ("POST", "/api/v1/email-verifications/{t}"),
    ("POST", "/api/v1/login"),
    ("GET", "/authorize"),
    ("POST", "/authorize"),
    ("GET", "/logout"),
    ("POST", "/logout"),
    ("GET", "/device"),
    ("POST", "/device"),
    ("GET", "/account"),
    ("POST", "/account/signin"),
    ("POST", "/account/password"),
    ("POST", "/account/authenticator"),
    ("POST", "/account/authenticator/confirm"),
    ("POST", "/account/sessions/end"),
    ("GET", "/api/v1/account"),
    ("POST", "/api/v1/account/password"),
    ("POST", "/api/v1/account/authenticator"),
    ("POST", "/api/v1/account/authenticator/confirm"),
    ("DELETE", "/api/v1/account/sessions"),
    ("DELETE", "/api/v1/account/sessions/{t}"),
    ("GET", "/.well-known/openid-configuration"),
    ("GET", "/keys"),
    ("POST", "/token"),
    ("GET", "/userinfo"),
    ("POST", "/userinfo"),
    ("POST", "/revoke"),
    ("POST", "/device_authorization"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/assets/portal.css"),
    ("GET", "/{t}"),
];

/// Every field name any route reads, and a few it does not.
const FIELDS: &[&str] = &[
    "password",
    "code",
    "email",
    "username",
    "identifier",
    "currentPassword",
    "newPassword",
    "form_token",
    "step",
    "password_confirm",
    "grant_type",
    "client_id",
    "client_secret",
    "code_verifier",
    "refresh_token",
    "redirect_uri",
    "token",
    "scope",
    "user_code",
    "device_code",
    "response_type",
    "state",
    "nonce",
    "id_token_hint",
    "post_logout_redirect_uri",
    "prompt",
    "code_challenge",
    "code_challenge_method",
    "allow",
    "max_age",
    "unknown",
    "__proto__",
];

/// How long an answer may take: longer than the portal's 10 s deadline on a body, and for
/// headers that never finish, longer than its 30 s deadline on headers.
const PATIENCE: Duration = Duration::from_secs(20);
const PATIENCE_FOR_HEADERS: Duration = Duration::from_secs(40);
/// How many requests are in flight at once: fewer than the shared operator's password
/// checks that may wait (8 per CPU), so that its other tests never meet 503 busy.
const PARALLEL: usize = 4;

pub fn trials() -> Vec<Trial> {
    vec![standalone("hostile_http::every_route_refuses_garbage_with_a_4xx_that_says_why", scenario)]
}

async fn scenario() -> anyhow::Result<()> {
    let inputs = size("HTTP_INPUTS", 3000);
    let (mut rng, seed) = Rng::seeded("HTTP", "hostile HTTP");
    let portal = shared().portal_url.trim_start_matches("http://").to_owned();
    let generated: Vec<Input> = (0..inputs).map(|_| Input::generate(&mut rng, &portal)).collect();
    let started = Instant::now();
    // Requests that stall wait out the portal's deadlines, not its work: all at once, beside
    // the rest.
    let (stalling, quick): (Vec<Input>, Vec<Input>) = generated.into_iter().partition(|i| i.stalls);
    let (mut answers, stalled) =
        futures::join!(exchange(&portal, quick, PARALLEL), exchange(&portal, stalling, inputs.max(1)));
    answers.extend(stalled);
    let took = started.elapsed();

    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (input, answer) in &answers {
        let verdict = match answer {
            Ok(answer) if input.unfinished_head => {
                // Hung up on (hyper sends no answer), or a 408: either way, not waited on.
                *statuses.entry("hung up on unfinished headers".into()).or_default() += 1;
                (answer.status != 0 && answer.status != 408)
                    .then(|| format!("{} to unfinished headers", answer.status))
            }
            Ok(answer) => {
                *statuses.entry(answer.status.to_string()).or_default() += 1;
                answer.fault(input)
            }
            Err(e) if (input.over_limit || input.malformed_http) && e.to_string().contains("reset") => {
                // Answered (413, 431) before the rest of the request was read, and closed
                // while it was on the wire: the kernel may drop the answer for the reset.
                *statuses.entry("reset after an oversized request".into()).or_default() += 1;
                None
            }
            Err(e) => Some(format!("no answer: {e:#}")),
        };
        if let Some(fault) = verdict {
            failures.push(format!("{fault}: {}", input.described));
        }
    }
    println!(
        "hostile HTTP: {} inputs at {} routes in {took:.1?} (seed {seed}); answers: {statuses:?}; {} failures",
        answers.len(),
        ROUTES.len(),
        failures.len()
    );
    failures.truncate(20);
    ensure!(failures.is_empty(), "(seed {seed}) first failures:\n{}", failures.join("\n"));

    let ready = reqwest::get(format!("{}/readyz", shared().operator_url)).await?.status();
    ensure!(ready.is_success(), "the operator is not ready after the hostile requests: {ready}");
    let log = std::fs::read_to_string(&shared().operator_log)?;
    ensure!(!log.contains("panicked"), "the operator panicked (seed {seed})");
    Ok(())
}

/// One request, as bytes on the wire.
struct Input {
    bytes: Vec<u8>,
    /// What it was, for a failure report (no more than a line).
    described: String,
    /// Refused by the HTTP parser itself (header too large, bytes not allowed in a header,
    /// a URI too long): the bare 4xx hyper sends has no body.
    malformed_http: bool,
    /// A body larger than the portal reads.
    over_limit: bool,
    /// Headers that never finish: the portal must hang up (its header deadline), not wait.
    unfinished_head: bool,
    /// Headers or a body that never finish.
    stalls: bool,
}

impl Input {
    fn generate(rng: &mut Rng, host: &str) -> Self {
        let (route_method, template) = *rng.pick(ROUTES);
        let method = if rng.one_in(8) {
            *rng.pick(&["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
        } else {
            route_method
        };
        let mut described = Vec::new();
        let (token, token_kind) = token(rng);
        let mut path = template.replace("{t}", &token);
        if template.contains("{t}") {
            described.push(format!("token {token_kind}"));
        }
        if rng.one_in(3) {
            let (query, kind) = query(rng);
            path.push('?');
            path.push_str(&query);
            described.push(format!("query {kind}"));
        }
        // hyper refuses a request target longer than 65,534 bytes with a bare 414.
        let mut malformed_http = path.len() > 65_534;

        let mut headers = vec![format!("Host: {host}"), "Connection: close".to_owned()];
        let (body, body_kind) =
            if method == "GET" && !rng.one_in(6) { (Vec::new(), "none") } else { body(rng) };
        described.push(format!("body {body_kind}"));
        if let Some(content_type) = content_type(rng, body_kind) {
            headers.push(format!("Content-Type: {content_type}"));
        }
        let stalls = !body.is_empty() && rng.one_in(40);
        let length = if stalls { body.len() + 100 } else { body.len() };
        if method != "GET" || !body.is_empty() {
            headers.push(format!("Content-Length: {length}"));
        }
        if stalls {
            described.push("body never finishes".into());
        }
        for _ in 0..rng.below(3) {
            let (header, kind, breaks_http) = header(rng);
            headers.push(header);
            described.push(kind.into());
            malformed_http |= breaks_http;
        }

        let mut bytes = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
        for header in &headers {
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        let unfinished_head = !malformed_http && rng.one_in(60);
        if unfinished_head {
            described.push("headers never finish".into());
        } else {
            bytes.extend_from_slice(b"\r\n");
            bytes.extend_from_slice(&body);
        }
        let shown: String = path.chars().take(80).collect();
        Self {
            bytes,
            described: format!("{method} {shown} [{}]", described.join(", ")),
            malformed_http,
            over_limit: body.len() > 16 * 1024,
            unfinished_head,
            stalls: stalls || unfinished_head,
        }
    }
}

/// A token or ID for a path, and what kind it is.
fn token(rng: &mut Rng) -> (String, &'static str) {
    match rng.below(9) {
        0 => (random_text(rng, 1..65), "random"),
        1 => {
            // The shape of roster's own tokens: a base64url locator, a dot, 43 characters.
            let locator = URL_SAFE_NO_PAD.encode(format!("team/{}-grant-0a1b2c3d4e", text(rng, 6)));
            (format!("{locator}.{}", text(rng, 43)), "token-shaped")
        }
        2 => ("%FF%FE%FD%00".into(), "invalid UTF-8"),
        3 => (
            rng.pick(&["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "..;", "%2F%2F", "a%2Fb", "."]).to_string(),
            "path trick",
        ),
        4 => (random_text(rng, 300..8300), "long"),
        5 => ("%0D%0ASet-Cookie:%20x=y".into(), "header injection"),
        6 => ("%E2%80%AE%F0%9F%98%80".into(), "unicode"),
        7 => (text(rng, 70_000), "longer than a URI may be"),
        _ => (percent(&random_bytes(rng, 1..41)), "random bytes"),
    }
}

/// A query string, and what kind it is.
fn query(rng: &mut Rng) -> (String, &'static str) {
    match rng.below(4) {
        0 => ("client_id=%zz&redirect_uri=%".into(), "invalid percent-encoding"),
        1 => (format!("state={}", text(rng, 20_000)), "long"),
        2 => ("response_type=code&response_type=token&client_id=a&client_id=b".into(), "repeated"),
        _ => {
            let pairs: Vec<String> = (0..1 + rng.below(5))
                .map(|_| format!("{}={}", rng.pick(FIELDS), percent(hostile_text(rng).as_bytes())))
                .collect();
            (pairs.join("&"), "hostile values")
        }
    }
}

/// A request body, and what kind it is.
fn body(rng: &mut Rng) -> (Vec<u8>, &'static str) {
    match rng.below(9) {
        0 => (Vec::new(), "empty"),
        1 | 2 => {
            let fields: serde_json::Map<String, serde_json::Value> =
                (0..rng.below(5)).map(|_| (rng.pick(FIELDS).to_string(), hostile_value(rng))).collect();
            (serde_json::Value::Object(fields).to_string().into_bytes(), "JSON with hostile values")
        }
        3 => {
            let broken = *rng.pick(&[
                "{",
                "{\"password\":",
                "[]",
                "null",
                "\"text\"",
                "{\"password\":\"a\"}}",
                "{\"password\":\"a\",\"password\":\"b\"}",
                "{'password':'a'}",
                "{\"password\":\"\\ud800\"}",
            ]);
            (broken.as_bytes().to_vec(), "malformed JSON")
        }
        4 => ("[".repeat(5_000).into_bytes(), "deeply nested JSON"),
        5 => {
            let pairs: Vec<String> = (0..1 + rng.below(6))
                .map(|_| format!("{}={}", rng.pick(FIELDS), percent(hostile_text(rng).as_bytes())))
                .collect();
            let mut form = pairs.join("&");
            if rng.one_in(3) {
                form.push_str("&%zz=%");
            }
            (form.into_bytes(), "form with hostile values")
        }
        6 => (random_bytes(rng, 1..2001), "random bytes"),
        7 => {
            let mut json = b"{\"password\":\"".to_vec();
            json.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
            json.extend_from_slice(b"\"}");
            (json, "JSON with invalid UTF-8")
        }
        _ => (vec![b'a'; 17 * 1024 + rng.below(200 * 1024)], "over the size limit"),
    }
}

fn content_type(rng: &mut Rng, body_kind: &str) -> Option<&'static str> {
    let fitting =
        if body_kind.starts_with("form") { "application/x-www-form-urlencoded" } else { "application/json" };
    match rng.below(6) {
        0 => None,
        1 => Some(*rng.pick(&[
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/json; charset=utf-16",
            "application/x-www-form-urlencoded",
            "application/json",
            "application/vnd.unknown+xml",
        ])),
        _ => Some(fitting),
    }
}

/// An extra header, what kind it is, and whether the HTTP parser itself refuses it.
fn header(rng: &mut Rng) -> (String, &'static str, bool) {
    match rng.below(10) {
        0 => (
            format!("Cookie: __Host-roster_session={}; roster_form={}", token(rng).0, text(rng, 43)),
            "random cookies",
            false,
        ),
        1 => (
            format!("Authorization: Bearer {}.{}.{}", text(rng, 30), text(rng, 60), text(rng, 40)),
            "random bearer token",
            false,
        ),
        2 => (
            format!("Authorization: Basic {}", STANDARD.encode(random_bytes(rng, 1..61))),
            "random basic credentials",
            false,
        ),
        3 => ("Authorization: Basic !!!not base64".into(), "broken basic credentials", false),
        4 => (
            format!("Origin: {}", rng.pick(&["null", "https://evil.example", "http://127.0.0.1"])),
            "foreign origin",
            false,
        ),
        5 => ("X-Forwarded-For: 1.2.3.4, garbage, ::1, 999.0.0.1".into(), "forwarded garbage", false),
        6 => (format!("X-Huge: {}", text(rng, 100 * 1024)), "100 KiB header", false),
        7 => (format!("X-Huge: {}", text(rng, 600 * 1024)), "600 KiB header", true),
        8 => {
            ((0..150).map(|n| format!("X-Many-{n}: x")).collect::<Vec<_>>().join("\r\n"), "150 headers", true)
        }
        _ => ("X-Bad: a\u{1}\u{7f}b".into(), "control characters in a header", true),
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Letters, digits, `-` and `_`, as many as `len` says (its end excluded).
fn random_text(rng: &mut Rng, len: std::ops::Range<usize>) -> String {
    let len = len.start + rng.below(len.len());
    (0..len).map(|_| char::from(*rng.pick(ALNUM))).collect()
}

/// [`random_text`] of exactly `len`.
fn text(rng: &mut Rng, len: usize) -> String {
    random_text(rng, len..len + 1)
}

fn random_bytes(rng: &mut Rng, len: std::ops::Range<usize>) -> Vec<u8> {
    let len = len.start + rng.below(len.len());
    (0..len).map(|_| u8::try_from(rng.below(256)).unwrap_or(0)).collect()
}

fn percent(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fn hostile_text(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => String::new(),
        1 => text(rng, 5_000),
        2 => "\u{202e}\u{0}\r\n<script>alert(1)</script>".into(),
        3 => "../../etc/passwd".into(),
        4 => "日本語のパスワード🙂".into(),
        5 => "' OR 1=1 --".into(),
        6 => "https://evil.example/callback".into(),
        _ => random_text(rng, 1..41),
    }
}

fn hostile_value(rng: &mut Rng) -> serde_json::Value {
    use serde_json::json;
    match rng.below(9) {
        0 => json!(null),
        1 => json!(true),
        2 => json!(-1),
        3 => json!(18_446_744_073_709_551_615_u64),
        4 => json!(1e308),
        5 => json!([hostile_text(rng)]),
        6 => json!({"nested": hostile_text(rng)}),
        _ => json!(hostile_text(rng)),
    }
}

/// What came back.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    /// What is wrong with this answer to `input`, if anything.
    fn fault(&self, input: &Input) -> Option<String> {
        if self.status >= 500 {
            return Some(format!("{} {}", self.status, String::from_utf8_lossy(&self.body).trim()));
        }
        let says_why = !String::from_utf8_lossy(&self.body).trim().is_empty()
            || (self.status == 401 && self.head.to_lowercase().contains("www-authenticate: bearer error="));
        if (400..500).contains(&self.status) && !says_why && !input.malformed_http {
            return Some(format!("{} without a message", self.status));
        }
        None
    }
}

/// Sends `inputs` to `host`, `parallel` at a time; each with its answer.
async fn exchange(host: &str, inputs: Vec<Input>, parallel: usize) -> Vec<(Input, anyhow::Result<Answer>)> {
    futures::stream::iter(inputs)
        .map(|input| async move {
            let answer = send(host, &input).await;
            (input, answer)
        })
        .buffer_unordered(parallel)
        .collect()
        .await
}

/// Sends `input` to `host` on a connection of its own and reads the answer to the end.
async fn send(host: &str, input: &Input) -> anyhow::Result<Answer> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(host).await?;
        // The server may answer and close before reading everything (a body over the
        // limit): the answer is what counts.
        let _ = stream.write_all(&input.bytes).await;
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await?;
        anyhow::Ok(received)
    };
    let patience = if input.unfinished_head { PATIENCE_FOR_HEADERS } else { PATIENCE };
    let received = tokio::time::timeout(patience, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {patience:?}"))??;
    let split = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(received.len());
    let head = String::from_utf8_lossy(&received[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    ensure!(
        status != 0 || (input.unfinished_head && received.is_empty()),
        "not an HTTP answer: {:?}",
        head.chars().take(100).collect::<String>()
    );
    let body = received.get(split + 4..).unwrap_or_default().to_vec();
    Ok(Answer { status, head, body })
}
