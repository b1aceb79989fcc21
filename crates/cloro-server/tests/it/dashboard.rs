//! The dashboard and the portal over HTTP (SPEC §13): sessions, CSRF, the
//! security headers of every page, the plaintext shown once, read tokens,
//! portal links, and sessions shared by two nodes on Redis. The same
//! flows in a real browser are in `browser.rs`.

use http::{Method, StatusCode};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::support::{ADMIN_TOKEN, Answer, TestServer};
use cloro_keystore::Clock;

pub(crate) const PLANS: &str = r#"
default_plan = "free"
[plans.free]
rate_limit = { requests = 1000, per_seconds = 3600 }
[plans.pro]
rate_limit = { requests = 100000, per_seconds = 3600 }
quota = { requests = 50000, period = "month" }
"#;

/// A browser without script: keeps cookies, sends forms.
pub(crate) struct Visitor<'a> {
    server: &'a TestServer,
    cookies: Vec<(String, String)>,
}

impl<'a> Visitor<'a> {
    pub(crate) fn new(server: &'a TestServer) -> Self {
        Visitor {
            server,
            cookies: Vec::new(),
        }
    }

    pub(crate) fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, answer: &Answer) {
        for value in answer.headers.get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let (pair, _) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(kept, _)| kept != name);
            if !value.is_empty() && !text.contains("Max-Age=0") {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    pub(crate) async fn get(&mut self, path: &str) -> Answer {
        let cookie = self.cookie_header();
        let answer = self
            .server
            .send(Method::GET, path, &[("cookie", &cookie)], "")
            .await;
        self.keep_cookies(&answer);
        answer
    }

    pub(crate) async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let cookie = self.cookie_header();
        let answer = self
            .server
            .send(
                Method::POST,
                path,
                &[
                    ("cookie", &cookie),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                &body,
            )
            .await;
        self.keep_cookies(&answer);
        answer
    }

    /// Opens a portal link the way its page does: the door page (which
    /// sets the door's cookie), then its button. Answers the door page when
    /// it refused, else the button's answer.
    pub(crate) async fn open_portal(&mut self, secret: &str) -> Answer {
        let door = self.get(&format!("/portal/enter?link={secret}")).await;
        if door.status != StatusCode::OK {
            return door;
        }
        let door_field = hidden(&door, "door");
        self.post("/portal/enter", &[("link", secret), ("door", &door_field)])
            .await
    }

    /// Signs in with `token` through the sign-in page.
    pub(crate) async fn sign_in(&mut self, token: &str) -> Answer {
        let page = self.get("/dashboard/sign-in").await;
        assert_eq!(page.status, StatusCode::OK);
        let secret = hidden(&page, "sign_in");
        self.post(
            "/dashboard/sign-in",
            &[("token", token), ("sign_in", &secret)],
        )
        .await
    }
}

/// The value of the hidden field `name` of a page.
pub(crate) fn hidden(answer: &Answer, name: &str) -> String {
    let text = text(answer);
    let marker = format!("name=\"{name}\" value=\"");
    let at = text
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in {text}"));
    let rest = &text[at + marker.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

pub(crate) fn text(answer: &Answer) -> String {
    String::from_utf8(answer.body.to_vec()).unwrap()
}

async fn admin(server: &TestServer, method: Method, path: &str, body: &str) -> Answer {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    server
        .send(method, path, &[("authorization", &auth)], body)
        .await
}

/// The secret of a portal link answer's `url`.
fn link_secret(answer: &Value) -> String {
    let url = answer["url"].as_str().unwrap();
    url.rsplit_once("link=").unwrap().1.to_owned()
}

fn assert_secure(answer: &Answer, what: &str) {
    let csp = answer.header("content-security-policy").unwrap_or_default();
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ] {
        assert!(csp.contains(part), "{what}: CSP {csp:?} lacks {part}");
    }
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(
        answer.header("referrer-policy"),
        Some("no-referrer"),
        "{what}"
    );
    assert_eq!(answer.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(
        answer.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    if answer.header("content-type") == Some("text/html; charset=utf-8") {
        assert_eq!(answer.header("cache-control"), Some("no-store"), "{what}");
        let body = text(answer);
        assert!(!body.contains("<script>"), "{what}: inline script");
        assert!(!body.contains(" style="), "{what}: inline style");
    }
}

/// Creates a key through the create form; answers the page and the key.
async fn create_through_form(
    visitor: &mut Visitor<'_>,
    new_path: &str,
    name: &str,
) -> (Answer, String, String) {
    let form = visitor.get(new_path).await;
    assert_eq!(form.status, StatusCode::OK, "{}", text(&form));
    let csrf = hidden(&form, "csrf");
    let form_id = hidden(&form, "form_id");
    let action = new_path.trim_end_matches("/new").to_owned();
    let created = visitor
        .post(
            &action,
            &[
                ("csrf", &csrf),
                ("form_id", &form_id),
                ("name", name),
                ("environment", "live"),
                ("expires", "never"),
                ("scopes", ""),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", text(&created));
    let key = hidden_value_of_secret(&created);
    (created, key, form_id)
}

fn hidden_value_of_secret(answer: &Answer) -> String {
    let body = text(answer);
    let at = body.find("id=\"secret\"").expect("the page shows the key");
    let rest = &body[at..];
    let value = &rest[rest.find("value=\"").unwrap() + 7..];
    value[..value.find('"').unwrap()].to_owned()
}

pub(crate) async fn key_id_of(server: &TestServer, key: &str) -> String {
    let whoami = server.get_with_key("/v1/whoami", key).await;
    assert_eq!(whoami.status, StatusCode::OK);
    whoami.json()["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn signing_in_gives_a_strict_session_cookie_and_every_page_is_secured() {
    let server = TestServer::embedded(PLANS).await;
    let mut visitor = Visitor::new(&server);
    // Not signed in: pages send you to sign in.
    let home = visitor.get("/dashboard").await;
    assert_eq!(home.status, StatusCode::SEE_OTHER);
    assert_eq!(home.header("location"), Some("/dashboard/sign-in"));
    assert_secure(&home, "redirect");
    let signed = visitor.sign_in(ADMIN_TOKEN).await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", text(&signed));
    let cookie = signed.header("set-cookie").unwrap();
    for part in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/dashboard",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP here: {cookie}");

    let (_, key, _) = create_through_form(
        &mut visitor,
        "/dashboard/accounts/acct_pages/keys/new",
        "pages",
    )
    .await;
    let id = key_id_of(&server, &key).await;
    let hook = admin(
        &server,
        Method::POST,
        "/admin/v1/webhooks",
        r#"{"url": "https://hooks.example.com/cloro?team=a&x=1", "events": ["key.revoked"]}"#,
    )
    .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{}", text(&hook));
    let hook_id = hook.json()["webhook"]["id"].as_str().unwrap().to_owned();
    let listed = visitor.get("/dashboard/webhooks").await;
    assert!(
        text(&listed).contains("https://hooks.example.com/cloro?team=a&amp;x=1"),
        "escaped: {}",
        text(&listed)
    );
    let deliveries = visitor.get(&format!("/dashboard/webhooks/{hook_id}")).await;
    assert_eq!(deliveries.status, StatusCode::OK);
    assert!(text(&deliveries).contains("Nothing was sent to this endpoint yet."));
    assert_eq!(
        visitor.get("/dashboard/webhooks/wh_nope").await.status,
        StatusCode::NOT_FOUND
    );
    for path in [
        format!("/dashboard/webhooks/{hook_id}"),
        "/dashboard".to_owned(),
        "/dashboard/sign-in".to_owned(),
        "/dashboard/accounts/acct_pages".to_owned(),
        "/dashboard/accounts/acct_none".to_owned(),
        "/dashboard/accounts/acct_pages/keys/new".to_owned(),
        format!("/dashboard/keys/{id}"),
        format!("/dashboard/keys/{id}?range=30d"),
        format!("/dashboard/keys/{id}?range=1y"),
        format!("/dashboard/keys/{id}/revoke"),
        "/dashboard/webhooks".to_owned(),
        "/dashboard/no-such-page".to_owned(),
        "/dashboard/keys/key_nope".to_owned(),
        "/dashboard/assets/dashboard.css".to_owned(),
        "/dashboard/assets/dashboard.js".to_owned(),
        "/portal".to_owned(),
        "/portal/enter?link=nope".to_owned(),
        // Refused before routing (SPEC §9), still with the pages' headers.
        "/dashboard/a;b".to_owned(),
        "/portal/%2e%2e/admin".to_owned(),
    ] {
        let page = visitor.get(&path).await;
        assert!(page.status.as_u16() < 500, "{path}: {}", page.status);
        assert_secure(&page, &path);
    }
    assert_eq!(
        visitor.get("/dashboard/no-such-page").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        visitor.get("/dashboard/keys/key_nope").await.status,
        StatusCode::NOT_FOUND
    );
    // A page that only takes forms says so.
    let wrong = visitor.get(&format!("/dashboard/keys/{id}/rotate")).await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.header("allow"), Some("POST"));
    server.stop().await;
}

#[tokio::test]
async fn a_forged_form_without_its_csrf_token_is_refused_and_changes_nothing() {
    let server = TestServer::embedded(PLANS).await;
    let key = server.create_key(|_| {}).await;
    let id = key_id_of(&server, &key).await;
    let mut visitor = Visitor::new(&server);
    visitor.sign_in(ADMIN_TOKEN).await;
    let revoke = format!("/dashboard/keys/{id}/revoke");
    for forged in [
        vec![],
        vec![("csrf", "0".repeat(64))],
        vec![("csrf", String::new())],
    ] {
        let fields: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut all = fields.clone();
        all.push(("reason", "forged"));
        let answer = visitor.post(&revoke, &all).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", text(&answer));
        assert!(text(&answer).contains("INSUFFICIENT_PERMISSIONS"));
    }
    // Without the session cookie (what SameSite=Strict leaves a cross-site
    // form), nothing is even looked at.
    let mut stranger = Visitor::new(&server);
    let page = visitor.get(&revoke).await;
    let csrf = hidden(&page, "csrf");
    let answer = stranger.post(&revoke, &[("csrf", &csrf)]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    // Another session's token is no good in this one.
    let mut other = Visitor::new(&server);
    other.sign_in(ADMIN_TOKEN).await;
    let answer = other.post(&revoke, &[("csrf", &csrf)]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(
        server.get_with_key("/v1/whoami", &key).await.status,
        StatusCode::OK
    );
    // With the page's token, it works.
    let answer = visitor
        .post(&revoke, &[("csrf", &csrf), ("reason", "done")])
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", text(&answer));
    assert_eq!(
        server.get_with_key("/v1/whoami", &key).await.code(),
        "REVOKED_API_KEY"
    );
    // A sign-in form from elsewhere (no sign-in cookie) cannot sign anyone in.
    let mut planted = Visitor::new(&server);
    let answer = planted
        .post(
            "/dashboard/sign-in",
            &[("token", ADMIN_TOKEN), ("sign_in", &"a".repeat(64))],
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(
        answer
            .header("set-cookie")
            .is_none_or(|c| !c.starts_with("cloro_session"))
    );
    server.stop().await;
}

#[tokio::test]
async fn the_plaintext_is_shown_on_the_creation_page_and_on_no_later_one() {
    let server = TestServer::embedded(PLANS).await;
    let mut visitor = Visitor::new(&server);
    visitor.sign_in(ADMIN_TOKEN).await;
    let new = "/dashboard/accounts/acct_once/keys/new";
    let (created, key, form_id) = create_through_form(&mut visitor, new, "once").await;
    assert!(key.starts_with("sk_live_"), "{key}");
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let id = key_id_of(&server, &key).await;
    // The same form again (a reload): no second key, no secret.
    let csrf = hidden(&visitor.get(new).await, "csrf");
    let again = visitor
        .post(
            "/dashboard/accounts/acct_once/keys",
            &[
                ("csrf", &csrf),
                ("form_id", &form_id),
                ("name", "once"),
                ("environment", "live"),
                ("expires", "never"),
                ("scopes", ""),
            ],
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(text(&again).contains("This form was sent already"));
    let listed = admin(
        &server,
        Method::GET,
        "/admin/v1/keys?account_id=acct_once",
        "",
    )
    .await;
    assert_eq!(listed.json()["keys"].as_array().unwrap().len(), 1);
    // Rotate, and read the new secret once too.
    let key_page = visitor.get(&format!("/dashboard/keys/{id}")).await;
    let rotated = visitor
        .post(
            &format!("/dashboard/keys/{id}/rotate"),
            &[
                ("csrf", &hidden(&key_page, "csrf")),
                ("form_id", &hidden(&key_page, "form_id")),
                ("grace", "3600"),
            ],
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", text(&rotated));
    let new_key = hidden_value_of_secret(&rotated);
    assert_ne!(new_key, key);
    let new_id = key_id_of(&server, &new_key).await;
    // The old key still works within its hour of grace.
    assert_eq!(
        server.get_with_key("/v1/whoami", &key).await.status,
        StatusCode::OK
    );
    // No later page holds either secret, nor any piece past its start.
    let pages = [
        "/dashboard".to_owned(),
        "/dashboard/accounts/acct_once".to_owned(),
        format!("/dashboard/keys/{id}"),
        format!("/dashboard/keys/{new_id}"),
        format!("/dashboard/keys/{new_id}?range=30d"),
        format!("/dashboard/keys/{id}/revoke"),
    ];
    for path in pages {
        let body = text(&visitor.get(&path).await);
        for secret in [&key, &new_key] {
            let hidden_part = &secret[16..];
            for window in hidden_part.as_bytes().windows(10) {
                let piece = std::str::from_utf8(window).unwrap();
                assert!(!body.contains(piece), "{path} shows part of a key: {piece}");
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_read_token_sees_everything_and_changes_nothing() {
    let server = TestServer::embedded(PLANS).await;
    let key = server.create_key(|_| {}).await;
    let id = key_id_of(&server, &key).await;
    let made = admin(
        &server,
        Method::POST,
        "/admin/v1/tokens",
        r#"{"name": "viewer", "role": "read"}"#,
    )
    .await;
    let token = made.json()["token"].as_str().unwrap().to_owned();
    let token_id = made.json()["token_info"]["id"].as_str().unwrap().to_owned();
    let mut visitor = Visitor::new(&server);
    assert_eq!(visitor.sign_in(&token).await.status, StatusCode::SEE_OTHER);
    let account = visitor.get("/dashboard/accounts/acct_test").await;
    assert_eq!(account.status, StatusCode::OK);
    let body = text(&account);
    assert!(body.contains("read only"));
    assert!(
        !body.contains("Create a key"),
        "a read token is offered no change"
    );
    let key_page = visitor.get(&format!("/dashboard/keys/{id}")).await;
    assert!(!text(&key_page).contains("Rotate"));
    let csrf = hidden(&key_page, "csrf");
    for (path, fields) in [
        (
            format!("/dashboard/keys/{id}/revoke"),
            vec![("csrf", csrf.as_str())],
        ),
        (
            "/dashboard/accounts/acct_test/plan".to_owned(),
            vec![("csrf", csrf.as_str()), ("plan", "pro")],
        ),
        (
            format!("/dashboard/keys/{id}/credits"),
            vec![("csrf", csrf.as_str()), ("change", "set"), ("amount", "5")],
        ),
    ] {
        let answer = visitor.post(&path, &fields).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}");
        assert!(text(&answer).contains("INSUFFICIENT_PERMISSIONS"), "{path}");
    }
    assert_eq!(
        server.get_with_key("/v1/whoami", &key).await.status,
        StatusCode::OK
    );
    let account = admin(&server, Method::GET, "/admin/v1/accounts/acct_test", "").await;
    assert_eq!(account.json()["plan"], "free");
    // Deleting the token ends its session at once.
    let deleted = admin(
        &server,
        Method::DELETE,
        &format!("/admin/v1/tokens/{token_id}"),
        "",
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let after = visitor.get("/dashboard/accounts/acct_test").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert_eq!(after.header("location"), Some("/dashboard/sign-in"));
    server.stop().await;
}

#[tokio::test]
async fn sign_out_ends_the_session_and_wrong_tokens_are_locked_out_as_on_the_admin_api() {
    let server = TestServer::embedded(&format!("max_failed_auth = \"3/hour\"\n{PLANS}")).await;
    let mut visitor = Visitor::new(&server);
    visitor.sign_in(ADMIN_TOKEN).await;
    let home = visitor.get("/dashboard").await;
    assert_eq!(home.status, StatusCode::OK);
    let csrf = hidden(&home, "csrf");
    let kept = visitor.cookies.clone();
    let out = visitor
        .post("/dashboard/sign-out", &[("csrf", &csrf)])
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    // The old cookie, kept by someone, opens nothing any more.
    visitor.cookies = kept;
    assert_eq!(
        visitor.get("/dashboard").await.status,
        StatusCode::SEE_OTHER
    );

    let mut guesser = Visitor::new(&server);
    for _ in 0..3 {
        let answer = guesser
            .sign_in("cloro_admin_0000000000000000000000000000000000000000000000000000000000000000")
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", text(&answer));
        assert!(text(&answer).contains("INVALID_ADMIN_TOKEN"));
    }
    let locked = guesser.sign_in(ADMIN_TOKEN).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(text(&locked).contains("TOO_MANY_FAILED_ATTEMPTS"));
    // The admin API shares the allowance.
    assert_eq!(
        admin(&server, Method::GET, "/admin/v1/plans", "")
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
    server.stop().await;
}

#[tokio::test]
async fn a_portal_link_opens_once_for_ten_minutes_and_only_its_own_account() {
    let clock = Clock::manual(Timestamp::now());
    let server = TestServer::embedded_with_clock(PLANS, clock.clone()).await;
    let own = server
        .create_key(|request| {
            request.account_id = cloro_auth_core::AccountId::new("acct_own").unwrap();
            request.scopes = vec![cloro_auth_core::Scope::new("read:users").unwrap()];
            request.credits = Some(1000);
        })
        .await;
    let other = server
        .create_key(|request| {
            request.account_id = cloro_auth_core::AccountId::new("acct_other").unwrap()
        })
        .await;
    let own_id = key_id_of(&server, &own).await;
    let other_id = key_id_of(&server, &other).await;
    let made = admin(
        &server,
        Method::POST,
        "/admin/v1/accounts/acct_own/portal-sessions",
        "",
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", text(&made));
    let link: Value = made.json();
    let url = link["url"].as_str().unwrap().to_owned();
    let expires: Timestamp = link["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        expires,
        clock
            .now()
            .checked_add(SignedDuration::from_mins(10))
            .unwrap()
    );
    let path = url
        .strip_prefix(&server.url(""))
        .expect("the link is on this server")
        .to_owned();
    assert!(path.starts_with("/portal/enter?link="), "{path}");
    let secret = path.trim_start_matches("/portal/enter?link=").to_owned();

    let mut customer = Visitor::new(&server);
    // Looking at the link (a preview would) does not use it up.
    for _ in 0..2 {
        let door = customer.get(&path).await;
        assert_eq!(door.status, StatusCode::OK);
        assert!(text(&door).contains("acct_own"));
    }
    // A page elsewhere cannot open a link in this browser: the button's
    // form must repeat the door page's own cookie.
    let planted = customer
        .post(
            "/portal/enter",
            &[("link", &secret), ("door", &"0".repeat(64))],
        )
        .await;
    assert_eq!(planted.status, StatusCode::FORBIDDEN, "{}", text(&planted));
    let opened = customer.open_portal(&secret).await;
    assert_eq!(opened.status, StatusCode::SEE_OTHER);
    assert_eq!(opened.header("location"), Some("/portal"));
    assert!(
        opened
            .header("set-cookie")
            .unwrap()
            .contains("Path=/portal")
    );
    let portal = customer.get("/portal").await;
    assert_eq!(portal.status, StatusCode::OK);
    assert!(text(&portal).contains(&own_id));
    assert!(!text(&portal).contains(&other_id));
    // Another account's key is not found, as a key that does not exist.
    assert_eq!(
        customer
            .get(&format!("/portal/keys/{other_id}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let csrf = hidden(&portal, "csrf");
    let revoke_other = customer
        .post(
            &format!("/portal/keys/{other_id}/revoke"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(revoke_other.status, StatusCode::NOT_FOUND);
    assert_eq!(
        server.get_with_key("/v1/whoami", &other).await.status,
        StatusCode::OK
    );
    // Nor the operator pages, nor the admin API.
    assert_eq!(
        customer.get("/dashboard").await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        customer.get("/dashboard/accounts/acct_other").await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        customer.get("/dashboard/webhooks").await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        customer
            .get("/admin/v1/keys?account_id=acct_own")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // Its own changes are audited as the portal's.
    let (made_page, made_key, _) =
        create_through_form(&mut customer, "/portal/keys/new", "from the portal").await;
    assert!(made_key.starts_with("sk_live_"));
    let made_body = text(&made_page);
    let at = made_body.find("href=\"/portal/keys/").unwrap() + "href=\"/portal/keys/".len();
    let made_id = made_body[at..at + made_body[at..].find('"').unwrap()].to_owned();
    let audit = admin(
        &server,
        Method::GET,
        "/admin/v1/audit?account_id=acct_own",
        "",
    )
    .await;
    let created = audit.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["key_id"] == made_id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(created["actor"], "portal:acct_own");
    // ... and get no more than the operator gave the account: the newest
    // active key's scopes, and no credits of their own to spend.
    let made_info = admin(
        &server,
        Method::GET,
        &format!("/admin/v1/keys/{made_id}"),
        "",
    )
    .await
    .json();
    assert_eq!(made_info["scopes"], serde_json::json!(["read:users"]));
    assert_eq!(made_info["credits"], 0);
    // The link opens once.
    let mut second = Visitor::new(&server);
    assert_eq!(
        second.open_portal(&secret).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(second.get(&path).await.status, StatusCode::UNAUTHORIZED);
    // A new link, unused for ten minutes, opens nothing.
    let late = admin(
        &server,
        Method::POST,
        "/admin/v1/accounts/acct_own/portal-sessions",
        "",
    )
    .await
    .json();
    let late_secret = link_secret(&late);
    clock.advance(SignedDuration::from_mins(10));
    assert_eq!(
        second.open_portal(&late_secret).await.status,
        StatusCode::UNAUTHORIZED
    );
    // And the opened portal closes after its hour.
    clock.advance(SignedDuration::from_mins(51));
    assert_eq!(
        customer.get("/portal").await.status,
        StatusCode::UNAUTHORIZED
    );
    // A body with fields is refused; a read token may not make links.
    let with_body = admin(
        &server,
        Method::POST,
        "/admin/v1/accounts/acct_own/portal-sessions",
        r#"{"ttl": 5}"#,
    )
    .await;
    assert_eq!(with_body.code(), "INVALID_REQUEST");
    let bad_account = admin(
        &server,
        Method::POST,
        "/admin/v1/accounts/bad%20id/portal-sessions",
        "",
    )
    .await;
    assert_eq!(bad_account.code(), "INVALID_REQUEST");
    server.stop().await;
}

#[tokio::test]
async fn a_replayed_portal_link_request_never_shows_the_link_again() {
    let server = TestServer::embedded(PLANS).await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let headers = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "portal-once"),
    ];
    let first = server
        .send(
            Method::POST,
            "/admin/v1/accounts/acct_p/portal-sessions",
            &headers,
            "",
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(first.json()["url"].is_string());
    let again = server
        .send(
            Method::POST,
            "/admin/v1/accounts/acct_p/portal-sessions",
            &headers,
            "",
        )
        .await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["url"], Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn a_session_made_on_one_redis_node_is_good_on_the_other_and_ends_on_both() {
    let redis = cloro_test_support::RedisServer::start();
    let first = TestServer::redis(&redis.url(), PLANS).await;
    let second = TestServer::redis(&redis.url(), PLANS).await;
    let mut on_first = Visitor::new(&first);
    on_first.sign_in(ADMIN_TOKEN).await;
    let mut on_second = Visitor::new(&second);
    on_second.cookies = on_first.cookies.clone();
    let home = on_second.get("/dashboard").await;
    assert_eq!(home.status, StatusCode::OK, "{}", text(&home));
    let csrf = hidden(&home, "csrf");
    assert_eq!(
        on_second
            .post("/dashboard/sign-out", &[("csrf", &csrf)])
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        on_first.get("/dashboard").await.status,
        StatusCode::SEE_OTHER
    );
    // A portal link made on one node opens on the other, once.
    let made = admin(
        &first,
        Method::POST,
        "/admin/v1/accounts/acct_r/portal-sessions",
        "",
    )
    .await
    .json();
    let secret = link_secret(&made);
    let mut customer = Visitor::new(&second);
    assert_eq!(
        customer.open_portal(&secret).await.status,
        StatusCode::SEE_OTHER
    );
    let mut late = Visitor::new(&first);
    assert_eq!(
        late.open_portal(&secret).await.status,
        StatusCode::UNAUTHORIZED
    );
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn a_portal_cannot_fill_an_account_with_keys() {
    let server = TestServer::embedded(PLANS).await;
    for n in 0..MAX_PORTAL_KEYS_IN_TESTS {
        server
            .create_key(|request| {
                request.account_id = cloro_auth_core::AccountId::new("acct_full").unwrap();
                request.name = format!("key {n}");
            })
            .await;
    }
    let made = admin(
        &server,
        Method::POST,
        "/admin/v1/accounts/acct_full/portal-sessions",
        "",
    )
    .await;
    let secret = link_secret(&made.json());
    let mut customer = Visitor::new(&server);
    assert_eq!(
        customer.open_portal(&secret).await.status,
        StatusCode::SEE_OTHER
    );
    let form = customer.get("/portal/keys/new").await;
    let refused = customer
        .post(
            "/portal/keys",
            &[
                ("csrf", &hidden(&form, "csrf")),
                ("form_id", &hidden(&form, "form_id")),
                ("name", "one more"),
            ],
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "{}",
        text(&refused)
    );
    assert!(text(&refused).contains("revoke one before creating another"));
    server.stop().await;
}

/// The server's cap on a portal's keys (`MAX_PORTAL_KEYS`).
const MAX_PORTAL_KEYS_IN_TESTS: usize = 50;

#[tokio::test]
async fn behind_a_tls_proxy_the_public_url_makes_cookies_secure_and_links_public() {
    let server = TestServer::embedded(&format!(
        "public_url = \"https://auth.example.com\"\n{PLANS}"
    ))
    .await;
    let mut visitor = Visitor::new(&server);
    let signed = visitor.sign_in(ADMIN_TOKEN).await;
    let cookie = signed.header("set-cookie").unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    // The Host a client sent is not where a link points.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let made = server
        .send(
            Method::POST,
            "/admin/v1/accounts/acct_pub/portal-sessions",
            &[("authorization", &auth), ("host", "evil.example")],
            "",
        )
        .await;
    let url = made.json()["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with("https://auth.example.com/portal/enter?link="),
        "{url}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_link_never_points_at_a_host_with_userinfo() {
    let server = TestServer::embedded(PLANS).await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let made = server
        .send(
            Method::POST,
            "/admin/v1/accounts/acct_pub/portal-sessions",
            &[
                ("authorization", &auth),
                ("host", "cloro.example.com@evil.example"),
            ],
            "",
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED);
    let url = made.json()["url"].as_str().unwrap().to_owned();
    assert!(!url.contains('@') && !url.contains("evil"), "{url}");
    server.stop().await;
}

#[tokio::test]
async fn other_spellings_of_pages_forms_and_the_portal_route_are_refused_cleanly() {
    let server = TestServer::embedded(PLANS).await;
    let key = server.create_key(|_| {}).await;
    let id = key_id_of(&server, &key).await;
    let mut visitor = Visitor::new(&server);
    visitor.sign_in(ADMIN_TOKEN).await;
    let cookie = visitor.cookie_header();
    // HEAD is GET without a body, with the same headers; never a change.
    let head = server
        .send(Method::HEAD, "/dashboard", &[("cookie", &cookie)], "")
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_secure(&head, "HEAD /dashboard");
    let head_rotate = server
        .send(
            Method::HEAD,
            &format!("/dashboard/keys/{id}/rotate"),
            &[("cookie", &cookie)],
            "",
        )
        .await;
    assert_eq!(head_rotate.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        server.get_with_key("/v1/whoami", &key).await.status,
        StatusCode::OK
    );
    // Forms: huge, repeated fields, unknown fields, bad UTF-8, each a 400
    // that changes nothing.
    let page = visitor.get(&format!("/dashboard/keys/{id}/revoke")).await;
    let csrf = hidden(&page, "csrf");
    let revoke = format!("/dashboard/keys/{id}/revoke");
    let huge = "r".repeat(20 * 1024);
    for (what, body) in [
        ("huge", format!("csrf={csrf}&reason={huge}")),
        ("repeated", format!("csrf={csrf}&reason=a&reason=b")),
        ("unknown", format!("csrf={csrf}&colour=red")),
        ("bad utf-8", format!("csrf={csrf}&reason=%ff")),
    ] {
        let answer = server
            .send(
                Method::POST,
                &revoke,
                &[
                    ("cookie", &cookie),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                &body,
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{what}");
        assert!(text(&answer).contains("INVALID_REQUEST"), "{what}");
    }
    assert_eq!(
        server.get_with_key("/v1/whoami", &key).await.status,
        StatusCode::OK
    );
    // A cookie of the wrong shape is no session, and a planted one first
    // in line does not hide the real one.
    for planted in ["cloro_session=x", "cloro_session=", "cloro_session=%41"] {
        let answer = server
            .send(Method::GET, "/dashboard", &[("cookie", planted)], "")
            .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{planted}");
    }
    let shadowed = format!("cloro_session={}; {cookie}", "0".repeat(64));
    let answer = server
        .send(Method::GET, "/dashboard", &[("cookie", &shadowed)], "")
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    // The portal route: other methods, bodies that are not an empty object.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let route = "/admin/v1/accounts/acct_s/portal-sessions";
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let answer = server
            .send(method.clone(), route, &[("authorization", &auth)], "")
            .await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    for body in ["[]", "{\"a\":1}", "{", &"x".repeat(70 * 1024)] {
        let answer = server
            .send(Method::POST, route, &[("authorization", &auth)], body)
            .await;
        assert_eq!(
            answer.code(),
            "INVALID_REQUEST",
            "{}",
            &body[..body.len().min(10)]
        );
    }
    let empty_object = server
        .send(Method::POST, route, &[("authorization", &auth)], "{}")
        .await;
    assert_eq!(empty_object.status, StatusCode::CREATED);
    // A portal door with a link of the wrong shape, or none.
    for door in [
        "/portal/enter?link=zz",
        "/portal/enter?link=",
        "/portal/enter",
    ] {
        assert_eq!(
            visitor.get(door).await.status,
            StatusCode::UNAUTHORIZED,
            "{door}"
        );
    }
    server.stop().await;
}
