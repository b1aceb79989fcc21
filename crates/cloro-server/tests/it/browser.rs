//! The dashboard and the portal in a real headless Chromium, driven over
//! WebDriver (SPEC §13): sign in, create a key and see it once, use it and
//! see the use in the chart, rotate with grace, revoke, change the plan, a
//! read token that sees but cannot change, sign out, and a portal link
//! that works once, only for its account, and expires.
//!
//! Each page is saved as a screenshot under `target/dashboard-screenshots/`
//! (look at them: they are what the dashboard looks like).

use std::path::PathBuf;
use std::time::Duration;

use cloro_auth_core::AccountId;
use cloro_keystore::Clock;
use cloro_test_support::ChromeDriver;
use fantoccini::{Client, ClientBuilder, Locator};
use http::{Method, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use jiff::{SignedDuration, Timestamp};

use crate::dashboard::{PLANS, key_id_of};
use crate::support::{ADMIN_TOKEN, TestServer};

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Browser {
    client: Client,
    base: String,
    shots: PathBuf,
    prefix: &'static str,
}

impl Browser {
    async fn open(driver: &ChromeDriver, base: String, prefix: &'static str) -> Browser {
        let capabilities: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&driver.capabilities_json(1280, 1400)).unwrap();
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url())
            .await
            .unwrap_or_else(|error| panic!("Chromium did not start a session: {error}"));
        Browser {
            client,
            base,
            shots: screenshot_dir(),
            prefix,
        }
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    async fn css(&self, selector: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(selector))
            .await
        {
            Ok(element) => element,
            Err(error) => panic!(
                "no {selector} on {}: {error}\n{}",
                self.path().await,
                self.source().await
            ),
        }
    }

    async fn type_into(&self, selector: &str, text: &str) {
        let field = self.css(selector).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn click(&self, selector: &str) {
        self.css(selector).await.click().await.unwrap();
    }

    async fn text_of(&self, selector: &str) -> String {
        self.css(selector).await.text().await.unwrap()
    }

    /// Saves the page as `NN-name.png`.
    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        std::fs::write(self.shots.join(format!("{}-{name}.png", self.prefix)), png).unwrap();
    }

    async fn sign_in(&self, token: &str) {
        self.goto("/dashboard").await;
        assert_eq!(self.path().await, "/dashboard/sign-in");
        self.type_into("#token", token).await;
        self.click("form button[type=submit]").await;
        self.wait_for_path("/dashboard").await;
    }

    async fn sign_out(&self) {
        self.click("header .who button").await;
        self.wait_for_path("/dashboard/sign-in").await;
    }

    /// Waits until the page holds `text` (a form that answers with a
    /// redirect to the same path leaves the path unchanged).
    async fn wait_for_text(&self, text: &str) {
        for _ in 0..200 {
            if self.source().await.contains(text) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the page never showed {text:?}:\n{}", self.source().await);
    }

    /// Waits until the browser is on `path` (a click that submits a form
    /// may return before the navigation it starts has ended).
    async fn wait_for_path(&self, path: &str) {
        for _ in 0..200 {
            if self.path().await == path {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "the browser never reached {path}: it is on {}\n{}",
            self.path().await,
            self.source().await
        );
    }
}

async fn admin(server: &TestServer, method: Method, path: &str, body: &str) -> serde_json::Value {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let answer = server
        .send(method, path, &[("authorization", &auth)], body)
        .await;
    assert!(answer.status.is_success(), "{path}: {:?}", answer.body);
    answer.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_and_a_customer_use_the_dashboard_in_a_real_browser_on_the_embedded_store() {
    let clock = Clock::manual(Timestamp::now());
    let server = TestServer::embedded_with_clock(PLANS, clock.clone()).await;
    walk_through(server, clock, "embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_and_a_customer_use_the_dashboard_in_a_real_browser_on_redis() {
    let redis = cloro_test_support::RedisServer::start();
    let clock = Clock::manual(Timestamp::now());
    let server = TestServer::redis_with_clock(&redis.url(), PLANS, clock.clone()).await;
    walk_through(server, clock, "redis").await;
}

async fn walk_through(server: TestServer, clock: Clock, prefix: &'static str) {
    let driver = ChromeDriver::start();
    let browser = Browser::open(&driver, server.url(""), prefix).await;

    // Sign in.
    browser.goto("/dashboard").await;
    browser.wait_for_path("/dashboard/sign-in").await;
    browser.shot("01-sign-in").await;
    browser.type_into("#token", "cloro_admin_wrong").await;
    browser.click("form button[type=submit]").await;
    assert!(
        browser
            .text_of(".alert")
            .await
            .contains("INVALID_ADMIN_TOKEN")
    );
    browser.shot("01b-sign-in-refused").await;
    browser.type_into("#token", ADMIN_TOKEN).await;
    browser.click("form button[type=submit]").await;
    browser.wait_for_path("/dashboard").await;
    browser.shot("02-accounts").await;

    // Find an account with no keys yet: its empty state says what to do.
    browser.type_into("#id", "acct_browser").await;
    browser.click("form.search button").await;
    browser
        .wait_for_path("/dashboard/accounts/acct_browser")
        .await;
    assert!(
        browser
            .source()
            .await
            .contains("This account has no keys yet.")
    );
    browser.shot("03-account-empty").await;

    // Create a key: shown once, with a copy button.
    browser.click(".empty a.button").await;
    browser.type_into("#name", "Production backend").await;
    browser.shot("03b-create-form").await;
    browser.click("form button.primary").await;
    let key = browser
        .css("#secret")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(key.starts_with("sk_live_"), "{key}");
    browser.click("button[data-copy]").await;
    assert_eq!(browser.text_of("button[data-copy]").await, "Copied");
    browser.shot("04-key-created").await;
    // A reload sends the form again: no second key, and no secret.
    browser.client.refresh().await.unwrap();
    let reloaded = browser.source().await;
    assert!(
        reloaded.contains("This form was sent already"),
        "{reloaded}"
    );
    assert!(!reloaded.contains(&key[16..]));
    let listed = admin(
        &server,
        Method::GET,
        "/admin/v1/keys?account_id=acct_browser",
        "",
    )
    .await;
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1);

    // Use it, and see the use in the chart.
    let id = key_id_of(&server, &key).await;
    for _ in 0..6 {
        assert_eq!(
            server.get_with_key("/v1/whoami", &key).await.status,
            StatusCode::OK
        );
    }
    server.app.flush_usage().await;
    browser.goto(&format!("/dashboard/keys/{id}")).await;
    let chart = browser
        .css("svg.chart title")
        .await
        .html(true)
        .await
        .unwrap();
    // The whoami above and the one in key_id_of.
    assert!(chart.contains(": 7 requests"), "{chart}");
    assert!(!browser.source().await.contains(&key[16..]));
    browser.shot("05-key").await;
    browser.click("nav.tabs a[href$='range=30d']").await;
    assert!(
        browser
            .source()
            .await
            .contains("aria-current=\"page\">30 days")
    );

    // Rotate with an hour of grace: the old key works on, the new one too.
    browser.goto(&format!("/dashboard/keys/{id}")).await;
    browser
        .css("#grace")
        .await
        .select_by_value("3600")
        .await
        .unwrap();
    browser.click("form[action$='/rotate'] button").await;
    let rotated = browser
        .css("#secret")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(rotated, key);
    assert!(browser.source().await.contains("keeps working until"));
    browser.shot("06-rotated").await;
    assert_eq!(
        server.get_with_key("/v1/whoami", &key).await.status,
        StatusCode::OK
    );
    let new_id = key_id_of(&server, &rotated).await;
    clock.advance(SignedDuration::from_mins(61));
    assert_eq!(
        server.get_with_key("/v1/whoami", &key).await.code(),
        "EXPIRED_API_KEY"
    );

    // Revoke, after a confirmation.
    browser.goto(&format!("/dashboard/keys/{new_id}")).await;
    browser.click("a.button.danger").await;
    browser.type_into("#reason", "moved to a new service").await;
    browser.shot("07-revoke-confirm").await;
    browser.click("button.danger").await;
    browser
        .wait_for_path(&format!("/dashboard/keys/{new_id}"))
        .await;
    assert_eq!(browser.text_of("h1 .badge").await, "Revoked");
    browser.shot("08-key-revoked").await;
    assert_eq!(
        server.get_with_key("/v1/whoami", &rotated).await.code(),
        "REVOKED_API_KEY"
    );

    // Change the plan; the quota shows.
    let live = server
        .create_key(|request| {
            request.account_id = AccountId::new("acct_browser").unwrap();
            request.name = "Reporting job".to_owned();
        })
        .await;
    for _ in 0..3 {
        server.get_with_key("/v1/whoami", &live).await;
    }
    server.app.flush_usage().await;
    browser.goto("/dashboard/accounts/acct_browser").await;
    browser
        .css("#plan")
        .await
        .select_by_value("pro")
        .await
        .unwrap();
    browser.click("form.inline button").await;
    browser
        .wait_for_path("/dashboard/accounts/acct_browser")
        .await;
    browser.wait_for_text("of 50,000").await;
    browser.shot("09-account").await;
    let account = admin(&server, Method::GET, "/admin/v1/accounts/acct_browser", "").await;
    assert_eq!(account["plan"], "pro");
    let audit = admin(
        &server,
        Method::GET,
        "/admin/v1/audit?account_id=acct_browser",
        "",
    )
    .await;
    assert!(
        audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|event| event["actor"] != "admin")
    );

    browser.goto("/dashboard/webhooks").await;
    browser.shot("10-webhooks-empty").await;
    let hook = admin(
        &server,
        Method::POST,
        "/admin/v1/webhooks",
        r#"{"url": "https://hooks.example.com/cloro", "events": ["key.revoked", "key.created"]}"#,
    )
    .await;
    browser.goto("/dashboard/webhooks").await;
    browser.shot("10b-webhooks").await;
    browser
        .goto(&format!(
            "/dashboard/webhooks/{}",
            hook["webhook"]["id"].as_str().unwrap()
        ))
        .await;
    browser.wait_for_text("Deliveries").await;
    browser.shot("10c-webhook-deliveries").await;
    browser.sign_out().await;
    browser.goto("/dashboard/accounts/acct_browser").await;
    browser.wait_for_path("/dashboard/sign-in").await;

    // A read token sees, and is offered nothing to change.
    let read = admin(
        &server,
        Method::POST,
        "/admin/v1/tokens",
        r#"{"name": "support", "role": "read"}"#,
    )
    .await;
    browser.sign_in(read["token"].as_str().unwrap()).await;
    browser.goto("/dashboard/accounts/acct_browser").await;
    let page = browser.source().await;
    assert!(page.contains("read only"));
    assert!(!page.contains("Create a key") && !page.contains("Change plan"));
    browser.shot("11-read-only").await;
    browser.sign_out().await;

    // A portal link: once, its own account only, and only for 10 minutes.
    let other = server
        .create_key(|request| request.account_id = AccountId::new("acct_else").unwrap())
        .await;
    let other_id = key_id_of(&server, &other).await;
    let link = admin(
        &server,
        Method::POST,
        "/admin/v1/accounts/acct_browser/portal-sessions",
        "",
    )
    .await;
    let url = link["url"].as_str().unwrap().to_owned();
    browser.client.goto(&url).await.unwrap();
    browser.shot("12-portal-door").await;
    browser.click("form button.primary").await;
    browser.wait_for_path("/portal").await;
    assert!(browser.source().await.contains("Reporting job"));
    browser.shot("13-portal").await;
    browser.goto(&format!("/portal/keys/{other_id}")).await;
    assert!(browser.source().await.contains("KEY_NOT_FOUND"));
    browser.goto("/dashboard").await;
    browser.wait_for_path("/dashboard/sign-in").await;
    browser.client.goto(&url).await.unwrap();
    assert!(
        browser
            .source()
            .await
            .contains("used already, or has expired")
    );
    browser.shot("14-portal-link-used").await;
    let unused = admin(
        &server,
        Method::POST,
        "/admin/v1/accounts/acct_browser/portal-sessions",
        "",
    )
    .await;
    clock.advance(SignedDuration::from_mins(11));
    browser
        .client
        .goto(unused["url"].as_str().unwrap())
        .await
        .unwrap();
    assert!(
        browser
            .source()
            .await
            .contains("used already, or has expired")
    );

    browser.client.close().await.unwrap();
    drop(driver);
    server.stop().await;
}
