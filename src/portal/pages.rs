//! The portal's HTML pages: server-rendered (minijinja, HTML-escaped), usable without
//! JavaScript and on a phone. Forms post back to the page's own URL and carry a form token
//! matched against a `SameSite=Strict` cookie; a step that succeeds redirects (303) so that
//! reloading never posts twice.

use std::sync::Arc;

use axum::Form;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine as _;
use k8s_openapi::jiff::Timestamp;
use minijinja::{Environment, Value, context};
use serde::Deserialize;

use super::Portal;
use super::api::try_again;
use super::guard::{form_cookie, form_token, form_token_matches};
use super::links::{self, LinkProblem, OpenLink, Stage};
use super::onboarding::{self, StepError};
use super::password_reset::{self, OpenPasswordReset};
use super::recovery::Asked;
use super::reenrolment::{self, OpenReset};
use super::verification;
use crate::api::{Initiator, User};

const TEMPLATES: [(&str, &str); 16] = [
    ("base.html", include_str!("templates/base.html")),
    ("password.html", include_str!("templates/password.html")),
    ("reset_password.html", include_str!("templates/reset_password.html")),
    ("new_password.html", include_str!("templates/new_password.html")),
    ("verify_email.html", include_str!("templates/verify_email.html")),
    ("totp.html", include_str!("templates/totp.html")),
    ("done.html", include_str!("templates/done.html")),
    ("problem.html", include_str!("templates/problem.html")),
    ("signin.html", include_str!("templates/signin.html")),
    ("denied.html", include_str!("templates/denied.html")),
    ("logout.html", include_str!("templates/logout.html")),
    ("signed_out.html", include_str!("templates/signed_out.html")),
    ("device.html", include_str!("templates/device.html")),
    ("signin_fields.html", include_str!("templates/signin_fields.html")),
    ("forgot.html", include_str!("templates/forgot.html")),
    ("account.html", include_str!("templates/account.html")),
];
const STYLESHEET: &str = include_str!("templates/portal.css");

/// The page templates.
pub struct Pages {
    env: Environment<'static>,
}

impl Pages {
    /// Parses the built-in templates.
    pub fn new() -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        Ok(Self { env })
    }

    /// The page `name` rendered with `values` (a 500 page when a template fails).
    pub fn render(&self, status: StatusCode, name: &str, values: Value) -> Response {
        match self.env.get_template(name).and_then(|t| t.render(values)) {
            Ok(html) => (status, Html(html)).into_response(),
            Err(error) => {
                tracing::error!(template = name, %error, "rendering a portal page failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be shown\n").into_response()
            }
        }
    }
}

/// What the onboarding form posts.
#[derive(Deserialize)]
pub struct StepForm {
    #[serde(default)]
    form_token: String,
    #[serde(default)]
    step: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
    #[serde(default)]
    code: String,
}

/// A problem page: what happened and whom to ask.
fn problem(portal: &Portal, status: StatusCode, title: &str, message: &str) -> Response {
    portal.pages.render(
        status,
        "problem.html",
        context! { org => &portal.org_name, root => "/", title => title, message => message },
    )
}

fn link_problem(portal: &Portal, problem_: LinkProblem) -> Response {
    let title = match problem_ {
        LinkProblem::Unknown => "Link not found",
        LinkProblem::Expired => "This invitation has expired",
        LinkProblem::Used => "This invitation was already used",
        LinkProblem::Revoked => "This invitation was withdrawn",
        LinkProblem::Replaced => "This invitation was replaced",
        LinkProblem::Superseded => "Your account is already set up",
        LinkProblem::Refused => "This account cannot be set up yet",
        LinkProblem::SecondFactorMissing => "A second factor is needed first",
        LinkProblem::UserInactive => "This account is deactivated",
        LinkProblem::Starting => "Starting up",
    };
    problem(portal, problem_.status(), title, problem_.message())
}

/// The link a step's form was posted to, opened with `open`: only for a form the browser's
/// own page sent (its form token matches the cookie — other sites cannot post), else the
/// page to answer with.
fn open_posted<L>(
    portal: &Portal,
    headers: &HeaderMap,
    form: &StepForm,
    token: &str,
    open: fn(&Portal, &str, Timestamp) -> Result<L, LinkProblem>,
) -> Result<L, Box<Response>> {
    if !form_token_matches(headers, &form.form_token) {
        return Err(Box::new(problem(
            portal,
            StatusCode::FORBIDDEN,
            "This form has expired",
            "Reload the page and try again. (Cookies must be allowed for this site.)",
        )));
    }
    open(portal, token, Timestamp::now()).map_err(|problem_| Box::new(link_problem(portal, problem_)))
}

/// `GET /invite/{token}`: the step the link is at.
pub async fn invite(
    State(portal): State<Arc<Portal>>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    match links::open(&portal, &token, Timestamp::now()) {
        Ok(link) => invite_page(&portal, &link, &headers, StatusCode::OK, None),
        Err(problem_) => link_problem(&portal, problem_),
    }
}

/// `POST /invite/{token}`: one step (`password` or `totp`).
pub async fn invite_step(
    State(portal): State<Arc<Portal>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Form(form): Form<StepForm>,
) -> Response {
    let link = match open_posted(&portal, &headers, &form, &token, links::open) {
        Ok(link) => link,
        Err(refused) => return *refused,
    };
    let again = Redirect::to(&token).into_response();
    let unprocessable =
        |error: &str| invite_page(&portal, &link, &headers, StatusCode::UNPROCESSABLE_ENTITY, Some(error));
    match form.step.as_str() {
        "password" if form.password != form.password_confirm => unprocessable("The two passwords differ."),
        "password" => match onboarding::set_password(&portal, &link, &form.password).await {
            Ok(Some(_)) | Err(StepError::AlreadyDone) => again,
            Ok(None) => done(&portal, &link.user),
            Err(StepError::Policy(violation)) => unprocessable(&format!("The password {violation}.")),
            Err(other) => step_failed(&portal, other),
        },
        "totp" => match onboarding::confirm_totp(&portal, &link, &form.code).await {
            Ok(()) => done(&portal, &link.user),
            Err(StepError::PasswordFirst) => again,
            Err(StepError::Code(rejected)) => unprocessable(&code_refused(rejected)),
            Err(other) => step_failed(&portal, other),
        },
        _ => again,
    }
}

/// `GET /mfa-reset/{token}`: the step the re-enrolment link is at.
pub async fn reset(
    State(portal): State<Arc<Portal>>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    match reenrolment::open(&portal, &token, Timestamp::now()) {
        Ok(link) => reset_page(&portal, &link, &headers, StatusCode::OK, None),
        Err(problem_) => link_problem(&portal, problem_),
    }
}

/// `POST /mfa-reset/{token}`: one step (`password` or `totp`).
pub async fn reset_step(
    State(portal): State<Arc<Portal>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Form(form): Form<StepForm>,
) -> Response {
    let link = match open_posted(&portal, &headers, &form, &token, reenrolment::open) {
        Ok(link) => link,
        Err(refused) => return *refused,
    };
    let again = Redirect::to(&token).into_response();
    let unprocessable = |status, error: &str| reset_page(&portal, &link, &headers, status, Some(error));
    match form.step.as_str() {
        "password" => match reenrolment::prove_password(&portal, &link, &form.password).await {
            Ok(_) => again,
            Err(StepError::WrongPassword) => {
                unprocessable(StatusCode::UNAUTHORIZED, "That password is not correct.")
            }
            Err(other) => step_failed(&portal, other),
        },
        "totp" => match reenrolment::confirm_totp(&portal, &link, &form.code).await {
            Ok(()) => done(&portal, &link.user),
            Err(StepError::PasswordFirst) => again,
            Err(StepError::Code(rejected)) => {
                unprocessable(StatusCode::UNPROCESSABLE_ENTITY, &code_refused(rejected))
            }
            Err(other) => step_failed(&portal, other),
        },
        _ => again,
    }
}

/// `GET /password-reset/{token}`: the form for a new password.
pub async fn password_reset(
    State(portal): State<Arc<Portal>>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    match password_reset::open(&portal, &token, Timestamp::now()) {
        Ok(link) => password_reset_page(&portal, &link, &headers, StatusCode::OK, None),
        Err(problem_) => link_problem(&portal, problem_),
    }
}

/// `POST /password-reset/{token}`: the new password (and a code when one is needed).
pub async fn password_reset_step(
    State(portal): State<Arc<Portal>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Form(form): Form<StepForm>,
) -> Response {
    let link = match open_posted(&portal, &headers, &form, &token, password_reset::open) {
        Ok(link) => link,
        Err(refused) => return *refused,
    };
    let unprocessable = |error: &str| {
        password_reset_page(&portal, &link, &headers, StatusCode::UNPROCESSABLE_ENTITY, Some(error))
    };
    if form.password != form.password_confirm {
        return unprocessable("The two passwords differ.");
    }
    match password_reset::set_password(&portal, &link, &form.password, &form.code).await {
        Ok(()) => done(&portal, &link.user),
        Err(StepError::Policy(violation)) => unprocessable(&format!("The password {violation}.")),
        Err(StepError::Code(rejected)) => unprocessable(&code_refused(rejected)),
        Err(other) => step_failed(&portal, other),
    }
}

fn password_reset_page(
    portal: &Portal,
    link: &OpenPasswordReset,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    page(
        portal,
        &link.user,
        Shown::ResetPassword(
            link.expires_at,
            link.code_required,
            link.reset.spec.initiator == Initiator::Person,
        ),
        headers,
        status,
        error,
    )
}

/// What the "forgot your password?" form posts.
#[derive(Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    form_token: String,
    #[serde(default)]
    identifier: String,
}

/// `GET /forgot-password`: asks for the account's email address or username.
pub async fn forgot_password(State(portal): State<Arc<Portal>>, headers: HeaderMap) -> Response {
    forgot_page(&portal, &headers, StatusCode::OK, false, None)
}

/// `POST /forgot-password`: the same page for every account, known or not ("check your
/// email"); the request is worked off after the answer ([`super::recovery`]).
pub async fn forgot_password_step(
    State(portal): State<Arc<Portal>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<ForgotForm>,
) -> Response {
    if !form_token_matches(&headers, &form.form_token) {
        return forgot_page(
            &portal,
            &headers,
            StatusCode::FORBIDDEN,
            false,
            Some("This form has expired. Try again. (Cookies must be allowed for this site.)"),
        );
    }
    let client = portal.address_of(peer, &headers);
    match portal.recovery.ask(&form.identifier, client) {
        Asked::Taken => forgot_page(&portal, &headers, StatusCode::OK, true, None),
        Asked::TooMany(_) => forgot_page(
            &portal,
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            false,
            Some("Too many requests from your network. Try again in an hour."),
        ),
        Asked::Empty => forgot_page(
            &portal,
            &headers,
            StatusCode::UNPROCESSABLE_ENTITY,
            false,
            Some("Enter the email address or username of your account."),
        ),
    }
}

fn forgot_page(
    portal: &Portal,
    headers: &HeaderMap,
    status: StatusCode,
    sent: bool,
    error: Option<&str>,
) -> Response {
    let Ok(form_token) = form_token(headers) else {
        return problem(portal, StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "Try again.");
    };
    let page = portal.pages.render(
        status,
        "forgot.html",
        context! { org => &portal.org_name, root => "", form_token => &form_token, sent => sent, error => error },
    );
    with_form_cookie(portal, page, &form_token)
}

/// `GET /verify-email/{token}`: asks for a click (nothing changes on GET).
pub async fn verification(
    State(portal): State<Arc<Portal>>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    match verification::open(&portal, &token, Timestamp::now()) {
        Ok(link) => verification_page(&portal, &link.address, &headers, false),
        Err(problem_) => link_problem(&portal, problem_),
    }
}

/// `POST /verify-email/{token}`: marks the address verified.
pub async fn verification_step(
    State(portal): State<Arc<Portal>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Form(form): Form<StepForm>,
) -> Response {
    let link = match open_posted(&portal, &headers, &form, &token, verification::open) {
        Ok(link) => link,
        Err(refused) => return *refused,
    };
    match verification::verify(&portal, &link).await {
        Ok(()) => verification_page(&portal, &link.address, &headers, true),
        Err(other) => step_failed(&portal, other),
    }
}

fn verification_page(portal: &Portal, address: &str, headers: &HeaderMap, done: bool) -> Response {
    let Ok(form_token) = form_token(headers) else {
        return problem(portal, StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "Try again.");
    };
    let response = portal.pages.render(
        StatusCode::OK,
        "verify_email.html",
        context! { org => &portal.org_name, root => "../", email => address, form_token => &form_token, done => done },
    );
    with_form_cookie(portal, response, &form_token)
}

fn code_refused(rejected: crate::credentials::TotpRejected) -> String {
    format!("That code did not work ({rejected}). Enter the code the app shows now.")
}

fn step_failed(portal: &Portal, error: StepError) -> Response {
    match error {
        StepError::Link(problem_) => link_problem(portal, problem_),
        StepError::Busy => {
            try_again(problem(portal, StatusCode::SERVICE_UNAVAILABLE, "Busy", &StepError::Busy.to_string()))
        }
        StepError::Unavailable => try_again(problem(
            portal,
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again in a moment",
            &StepError::Unavailable.to_string(),
        )),
        other => {
            problem(portal, StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", &other.to_string())
        }
    }
}

/// Which step a page shows.
enum Shown<'a> {
    /// Choose a password (onboarding), with the link's expiry.
    NewPassword(Option<Timestamp>),
    /// Confirm the current password (re-enrolment).
    CurrentPassword,
    /// Choose a new password through a reset link (with the link's expiry), with a code
    /// when a second factor is enrolled; whether the person asked for it.
    ResetPassword(Option<Timestamp>, bool, bool),
    /// Set up an authenticator app with this secret.
    Totp(&'a str),
}

fn invite_page(
    portal: &Portal,
    link: &OpenLink,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let shown = match &link.stage {
        Stage::Password => Shown::NewPassword(link.expires_at),
        Stage::EnrolTotp(secret) => Shown::Totp(secret),
    };
    page(portal, &link.user, shown, headers, status, error)
}

fn reset_page(
    portal: &Portal,
    link: &OpenReset,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let shown = match &link.stage {
        Stage::Password => Shown::CurrentPassword,
        Stage::EnrolTotp(secret) => Shown::Totp(secret),
    };
    page(portal, &link.user, shown, headers, status, error)
}

/// The page of one step, with `error` next to the field it concerns, and the form token
/// handed to the browser.
fn page(
    portal: &Portal,
    user: &User,
    shown: Shown<'_>,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let oops = || problem(portal, StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "Try again.");
    let Ok(form_token) = form_token(headers) else { return oops() };
    let spec = &user.spec;
    let name = spec.display_name.clone().or_else(|| spec.given_name.clone()).unwrap_or_default();
    let common = context! {
        org => &portal.org_name,
        root => "../",
        email => &spec.email,
        name => name,
        form_token => &form_token,
        error => error,
    };
    let response = match shown {
        Shown::NewPassword(expires) => portal.pages.render(
            status,
            "password.html",
            context! {
                min_length => portal.policy.min_length,
                steps => if spec.mfa.required { 2 } else { 1 },
                expires => expires.map(crate::mail::for_people),
                ..common
            },
        ),
        Shown::CurrentPassword => portal.pages.render(status, "reset_password.html", common),
        Shown::ResetPassword(expires, code_required, requested) => portal.pages.render(
            status,
            "new_password.html",
            context! {
                min_length => portal.policy.min_length,
                code_required => code_required,
                requested => requested,
                expires => expires.map(crate::mail::for_people),
                ..common
            },
        ),
        Shown::Totp(secret) => {
            let offer = match onboarding::offer(portal, user, secret) {
                Ok(offer) => offer,
                Err(e) => return step_failed(portal, e),
            };
            let Some(qr) = qr_data_uri(&offer.otpauth_uri) else { return oops() };
            portal.pages.render(
                status,
                "totp.html",
                context! {
                    qr => qr,
                    otpauth_uri => &offer.otpauth_uri,
                    secret_grouped => grouped(&offer.secret),
                    ..common
                },
            )
        }
    };
    with_form_cookie(portal, response, &form_token)
}

/// `response` with the cookie that hands `form_token` to the browser (its forms post it back).
pub fn with_form_cookie(portal: &Portal, mut response: Response, form_token: &str) -> Response {
    if let Ok(cookie) = HeaderValue::from_str(&form_cookie(form_token, portal.https)) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

fn done(portal: &Portal, user: &User) -> Response {
    portal.pages.render(
        StatusCode::OK,
        "done.html",
        context! {
            org => &portal.org_name,
            root => "../",
            email => &user.spec.email,
            mfa => user.spec.mfa.required,
        },
    )
}

/// A TOTP secret in groups of four, for typing by hand.
pub(crate) fn grouped(secret: &str) -> String {
    let groups: Vec<String> =
        secret.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    groups.join(" ")
}

/// The QR code of `uri` as an SVG `data:` URI (an image: the content security policy allows
/// no inline styles or scripts).
pub(crate) fn qr_data_uri(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    let svg = code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(220, 220).build();
    Some(format!("data:image/svg+xml;base64,{}", base64::engine::general_purpose::STANDARD.encode(svg)))
}

/// `GET /assets/portal.css`.
pub async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLESHEET).into_response()
}

/// Any other path.
pub async fn not_found(State(portal): State<Arc<Portal>>) -> Response {
    problem(&portal, StatusCode::NOT_FOUND, "Page not found", "There is nothing at this address.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_renders_and_escapes() {
        let pages = Pages::new().unwrap();
        let common =
            context! { org => "A & B <Corp>", root => "/", email => "j@example.com", form_token => "t" };
        for (name, extra) in [
            ("password.html", context! { min_length => 12, steps => 2, error => "too short" }),
            (
                "totp.html",
                context! { qr => "data:x", otpauth_uri => "otpauth://totp/x", secret_grouped => "ABCD" },
            ),
            ("done.html", context! { mfa => true }),
            ("reset_password.html", context! { error => "wrong" }),
            ("problem.html", context! { title => "Gone", message => "<b>m</b>" }),
            ("logout.html", context! { action => "/logout", params => vec![("state", "s")] }),
            ("signed_out.html", context! {}),
            ("device.html", context! { mode => "code", action => "/device", user_code => "BCDF-GHJK" }),
            (
                "device.html",
                context! { mode => "signin", client => "tv", user_code => "BCDF-GHJK", scopes => "openid", offline => true },
            ),
            ("device.html", context! { mode => "confirm", client => "tv", who => "j@example.com" }),
            ("device.html", context! { mode => "done", client => "tv" }),
            ("forgot.html", context! { sent => false, error => "empty" }),
            ("forgot.html", context! { sent => true }),
            ("signin.html", context! { client => "app", forgot => "/forgot-password" }),
        ] {
            let response = pages.render(StatusCode::OK, name, context! { ..extra, ..common.clone() });
            assert_eq!(response.status(), StatusCode::OK, "{name}");
        }
        let html = pages
            .env
            .get_template("problem.html")
            .unwrap()
            .render(context! { org => "A & B <Corp>", title => "t", message => "<b>m</b>" })
            .unwrap();
        assert!(html.contains("A &amp; B &lt;Corp&gt;") && html.contains("&lt;b&gt;m"), "{html}");
    }

    #[test]
    fn the_qr_code_is_an_svg_image() {
        let uri = qr_data_uri("otpauth://totp/Example:jane@example.com?secret=JBSWY3DPEHPK3PXP").unwrap();
        assert!(uri.starts_with("data:image/svg+xml;base64,"));
    }
}
