//! Leaked keys (SPEC §12): secret-scanning partners' signed reports, with a
//! P-256 key pair made here and a local server for the partner's public
//! keys, and operators' `revoke-leaked`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use cloro_auth_core::{ApiKey, Environment, KeyHash};
use cloro_keystore::Clock;
use cloro_test_support::RedisServer;
use http::{Method, StatusCode};
use jiff::{SignedDuration, Timestamp};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, SigningKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{ADMIN_TOKEN, Answer, TestServer};

/// A partner's signing key and where its public half is served.
struct Partner {
    pair: KeyPair,
    identifier: String,
}

impl Partner {
    fn new(identifier: &str) -> Partner {
        Partner {
            pair: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
            identifier: identifier.to_owned(),
        }
    }

    fn listed(&self) -> serde_json::Value {
        serde_json::json!({"key_identifier": self.identifier, "key": self.pair.public_key_pem(), "is_current": true})
    }

    fn signature(&self, body: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.pair.sign(body.as_bytes()).unwrap())
    }
}

/// The partner's key list over HTTP on loopback, counting fetches.
struct KeyServer {
    url: String,
    list: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl KeyServer {
    async fn start(keys: &[&Partner]) -> KeyServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/meta/public_keys", listener.local_addr().unwrap());
        let list = Arc::new(Mutex::new(String::new()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (list.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut head = vec![0u8; 4096];
                let _ = stream.read(&mut head).await;
                counted.fetch_add(1, Ordering::SeqCst);
                let body = served.lock().unwrap().clone();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        let server = KeyServer {
            url,
            list,
            fetches,
            task,
        };
        server.serve(keys);
        server
    }

    fn serve(&self, keys: &[&Partner]) {
        let listed: Vec<_> = keys.iter().map(|k| k.listed()).collect();
        *self.list.lock().unwrap() = serde_json::json!({ "public_keys": listed }).to_string();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config(keys_url: &str, extra: &str) -> String {
    format!(
        "[plans.free]\nrate_limit = {{ requests = 100000, per_seconds = 1 }}\n[secret_scanning]\n{extra}\n[secret_scanning.github]\npublic_keys_url = \"{keys_url}\"\n"
    )
}

async fn report(server: &TestServer, partner: &Partner, body: &str) -> Answer {
    report_to(server, "github", partner, body).await
}

async fn report_to(server: &TestServer, to: &str, partner: &Partner, body: &str) -> Answer {
    let path = match to {
        "github" => "/partners/github/secret-scanning",
        _ => "/partners/gitlab/secret-detection",
    };
    let signature = partner.signature(body);
    let (id_header, signature_header) = match to {
        "github" => (
            "github-public-key-identifier",
            "github-public-key-signature",
        ),
        _ => (
            "gitlab-public-key-identifier",
            "gitlab-public-key-signature",
        ),
    };
    server
        .send(
            Method::POST,
            path,
            &[
                (id_header, partner.identifier.as_str()),
                (signature_header, signature.as_str()),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
}

fn tokens(tokens: &[&str]) -> String {
    let entries: Vec<_> = tokens
        .iter()
        .map(|token| {
            serde_json::json!({"token": token, "type": "cloro_api_key", "url": "https://github.com/octo/repo/blob/main/.env", "source": "content"})
        })
        .collect();
    serde_json::Value::from(entries).to_string()
}

fn sha256_hex(token: &str) -> String {
    String::from_utf8(KeyHash::of(token.as_bytes()).to_hex().to_vec()).unwrap()
}

async fn admin_get(server: &TestServer, path: &str) -> serde_json::Value {
    let authorization = format!("Bearer {ADMIN_TOKEN}");
    let answer = server
        .send(Method::GET, path, &[("authorization", &authorization)], "")
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json());
    answer.json()
}

async fn leaked_events(server: &TestServer) -> Vec<serde_json::Value> {
    let audit = admin_get(server, "/admin/v1/audit?account_id=acct_test").await;
    audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["action"] == "key.leaked")
        .cloned()
        .collect()
}

/// A well-formed key we never issued, and one with a bad checksum.
fn made_up_keys() -> (String, String) {
    let unknown = ApiKey::from_random_bytes(Environment::Live, [9; 16])
        .expose_secret()
        .to_owned();
    let mut mistyped = unknown.clone();
    mistyped.replace_range(10..11, if &unknown[10..11] == "0" { "1" } else { "0" });
    (unknown, mistyped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_key_is_refused_on_every_node_within_a_second() {
    let github = Partner::new("github-key-1");
    let keys = KeyServer::start(&[&github]).await;
    let redis = RedisServer::start();
    let toml = config(&keys.url, "");
    let (a, b) = (
        TestServer::redis(&redis.url(), &toml).await,
        TestServer::redis(&redis.url(), &toml).await,
    );
    refused_on_both_nodes_within_a_second(&a, &b, &github, &keys).await;
    a.stop().await;
    b.stop().await;
}

/// The same on two nodes of a Redis Cluster (three masters): the record,
/// its audit event and its outbox event in the account's slot, the
/// invalidation heard by the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_key_is_refused_on_every_cluster_node_within_a_second() {
    let github = Partner::new("github-key-1");
    let keys = KeyServer::start(&[&github]).await;
    let cluster = tokio::task::spawn_blocking(|| cloro_test_support::RedisCluster::start(3, 0))
        .await
        .unwrap();
    let node = || {
        let flags = cloro_server::config::Flags {
            redis_url: Some(cluster.seeds()),
            redis_cluster: Some(true),
            ..cloro_server::config::Flags::default()
        };
        let toml = format!("allow_private_webhooks = true\n{}", config(&keys.url, ""));
        cloro_server::config::Settings::from_toml(flags, &toml).unwrap()
    };
    let (a, b) = (
        TestServer::start(node(), None).await,
        TestServer::start(node(), None).await,
    );
    // And the `key.leaked` event reaches a receiver.
    let receiver = crate::webhooks::Receiver::start(&[]).await;
    let registered = a
        .send(
            Method::POST,
            "/admin/v1/webhooks",
            &[
                ("authorization", &format!("Bearer {ADMIN_TOKEN}")),
                ("content-type", "application/json"),
            ],
            &serde_json::json!({"url": receiver.url, "events": ["key.leaked"]}).to_string(),
        )
        .await;
    assert_eq!(registered.status, StatusCode::CREATED);
    refused_on_both_nodes_within_a_second(&a, &b, &github, &keys).await;
    let delivered = receiver.wait_for(1).await;
    assert_eq!(delivered[0].payload().event_type.as_str(), "key.leaked");
    a.stop().await;
    b.stop().await;
}

/// A report to `a` of one real key among false positives: the right
/// feedback, the key refused by both nodes within a second, one audit
/// event, and a repeat to `b` that changes nothing.
async fn refused_on_both_nodes_within_a_second(
    a: &TestServer,
    b: &TestServer,
    github: &Partner,
    keys: &KeyServer,
) {
    let leaked = a.create_key(|_| {}).await;
    let bystander = a.create_key(|_| {}).await;
    for node in [a, b] {
        assert_eq!(
            node.get_with_key("/v1/whoami", &leaked).await.status,
            StatusCode::OK
        );
    }
    let (unknown, mistyped) = made_up_keys();
    let body = tokens(&[
        &leaked,
        "ghp_0123456789abcdefghijklmnopqrstuvwxyz",
        &mistyped,
        &unknown,
    ]);

    let started = Instant::now();
    let answer = report(a, github, &body).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json());
    let feedback = answer.json();
    let labels: Vec<_> = feedback
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["label"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        labels,
        [
            "true_positive",
            "false_positive",
            "false_positive",
            "false_positive"
        ]
    );
    assert_eq!(feedback[0]["token_hash"], sha256_hex(&leaked));
    assert_eq!(feedback[0]["token_type"], "cloro_api_key");
    assert!(
        !answer
            .body
            .windows(20)
            .any(|w| leaked.as_bytes().windows(20).any(|k| k == w))
    );

    // Every node refuses it within a second of the report.
    for node in [a, b] {
        loop {
            let answer = node.get_with_key("/v1/whoami", &leaked).await;
            if answer.status == StatusCode::UNAUTHORIZED {
                assert_eq!(answer.code(), "REVOKED_API_KEY");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "still accepted after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(
        b.get_with_key("/v1/whoami", &bystander).await.status,
        StatusCode::OK
    );

    let events = leaked_events(a).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["actor"], "github-secret-scanning");
    assert_eq!(
        events[0]["details"]["url"],
        "https://github.com/octo/repo/blob/main/.env"
    );
    assert_eq!(events[0]["details"]["source"], "content");
    assert_eq!(events[0]["details"]["action"], "revoke");

    // The same report again: the same answer, and nothing new.
    let again = report(b, github, &body).await;
    assert_eq!(again.json(), feedback);
    assert_eq!(leaked_events(a).await.len(), 1);
    assert_eq!(keys.fetches(), 2, "one fetch per node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_or_forged_report_is_401_and_changes_nothing() {
    let github = Partner::new("github-key-1");
    let forger = Partner::new("github-key-1");
    let keys = KeyServer::start(&[&github]).await;
    let server = TestServer::embedded(&config(&keys.url, "")).await;
    let key = server.create_key(|_| {}).await;
    let body = tokens(&[&key]);
    let signature = github.signature(&body);
    let forged = forger.signature(&body);
    let path = "/partners/github/secret-scanning";
    let cases: Vec<(Vec<(&str, &str)>, String)> = vec![
        (vec![], body.clone()),
        (
            vec![("github-public-key-identifier", "github-key-1")],
            body.clone(),
        ),
        (
            vec![
                ("github-public-key-identifier", "github-key-1"),
                ("github-public-key-signature", "not base64!"),
            ],
            body.clone(),
        ),
        // Signed by someone else under GitHub's identifier.
        (
            vec![
                ("github-public-key-identifier", "github-key-1"),
                ("github-public-key-signature", &forged),
            ],
            body.clone(),
        ),
        // GitHub's signature over another body.
        (
            vec![
                ("github-public-key-identifier", "github-key-1"),
                ("github-public-key-signature", &signature),
            ],
            body.replace("content", "commit"),
        ),
        // An identifier GitHub never published.
        (
            vec![
                ("github-public-key-identifier", "someone-else"),
                ("github-public-key-signature", &signature),
            ],
            body.clone(),
        ),
    ];
    for (headers, body) in &cases {
        let answer = server.send(Method::POST, path, headers, body).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(answer.code(), "INVALID_SIGNATURE", "{headers:?}");
        assert_eq!(
            answer.header("www-authenticate"),
            Some("Signature realm=\"cloro-secret-scanning\"")
        );
    }
    assert_eq!(
        server.get_with_key("/v1/whoami", &key).await.status,
        StatusCode::OK
    );
    assert!(leaked_events(&server).await.is_empty());

    // Signed, but not a report: a clear 400, still nothing changed.
    for bad in ["{\"token\": 1}", "[{\"type\": \"x\"}]", "not json"] {
        let answer = report(&server, &github, bad).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(answer.code(), "INVALID_REQUEST");
    }
    // GitLab is off unless configured.
    let answer = report_to(&server, "gitlab", &github, &body).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        server.get_with_key("/v1/whoami", &key).await.status,
        StatusCode::OK
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_identifier_fetches_the_keys_again_at_most_once_a_minute() {
    let old = Partner::new("github-key-1");
    let new = Partner::new("github-key-2");
    let keys = KeyServer::start(&[&old]).await;
    let clock = Clock::manual(Timestamp::now());
    let server = TestServer::embedded_with_clock(&config(&keys.url, ""), clock.clone()).await;
    let (unknown, _) = made_up_keys();
    let body = tokens(&[&unknown]);
    assert_eq!(report(&server, &old, &body).await.status, StatusCode::OK);
    assert_eq!(keys.fetches(), 1);
    // GitHub rotates its key; the next report is signed with the new one.
    keys.serve(&[&old, &new]);
    // Within the minute: no fetch, and the report is not believed (GitHub retries).
    assert_eq!(
        report(&server, &new, &body).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(report(&server, &old, &body).await.status, StatusCode::OK);
    assert_eq!(keys.fetches(), 1);
    clock.advance(SignedDuration::from_secs(61));
    assert_eq!(report(&server, &new, &body).await.status, StatusCode::OK);
    assert_eq!(keys.fetches(), 2);
    // A flood of made-up identifiers costs nothing more.
    let stranger = Partner::new("made-up");
    for _ in 0..5 {
        assert_eq!(
            report(&server, &stranger, &body).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(keys.fetches(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_reports_from_a_key_file_and_the_disable_and_notify_actions() {
    let gitlab = Partner::new("gitlab-1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gitlab-keys.json");
    std::fs::write(
        &file,
        serde_json::json!({ "public_keys": [gitlab.listed()] }).to_string(),
    )
    .unwrap();
    for (action, status, code) in [
        ("disable", StatusCode::UNAUTHORIZED, "REVOKED_API_KEY"),
        ("notify", StatusCode::OK, ""),
    ] {
        let toml = format!(
            "[secret_scanning]\nleaked_key_action = \"{action}\"\n[secret_scanning.gitlab]\npublic_keys_file = \"{}\"\n",
            file.display()
        );
        let server = TestServer::embedded(&toml).await;
        let key = server.create_key(|_| {}).await;
        let body = tokens(&[&key]);
        let answer = report_to(&server, "gitlab", &gitlab, &body).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json());
        assert_eq!(answer.json()[0]["label"], "true_positive");
        let after = server.get_with_key("/v1/whoami", &key).await;
        assert_eq!(after.status, status, "{action}");
        if !code.is_empty() {
            assert_eq!(after.code(), code);
            assert_eq!(after.json()["error"]["details"]["reason"], "disabled");
        }
        let events = leaked_events(&server).await;
        assert_eq!(events.len(), 1, "{action}");
        assert_eq!(events[0]["actor"], "gitlab-secret-detection");
        assert_eq!(events[0]["details"]["action"], action);
        // Reported again: nothing new.
        report_to(&server, "gitlab", &gitlab, &body).await;
        assert_eq!(leaked_events(&server).await.len(), 1, "{action}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_of_a_thousand_tokens_is_answered_within_five_seconds() {
    let github = Partner::new("github-key-1");
    let keys = KeyServer::start(&[&github]).await;
    let server = TestServer::embedded(&config(&keys.url, "")).await;
    let mut issued = Vec::new();
    for _ in 0..20 {
        issued.push(server.create_key(|_| {}).await);
    }
    let mut reported: Vec<String> = issued.clone();
    for i in 0..980u32 {
        let mut random = [0u8; 16];
        random[..4].copy_from_slice(&i.to_be_bytes());
        reported.push(
            ApiKey::from_random_bytes(Environment::Live, random)
                .expose_secret()
                .to_owned(),
        );
    }
    let refs: Vec<&str> = reported.iter().map(String::as_str).collect();
    let body = tokens(&refs);
    let started = Instant::now();
    let answer = report(&server, &github, &body).await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::OK);
    let feedback = answer.json();
    let feedback = feedback.as_array().unwrap();
    assert_eq!(feedback.len(), 1000);
    let true_positives = feedback
        .iter()
        .filter(|entry| entry["label"] == "true_positive")
        .count();
    assert_eq!(true_positives, 20);
    // SPEC §12's bound for a full batch (with 20 real keys among them).
    assert!(took < Duration::from_secs(5), "took {took:?}");
    for key in &issued {
        assert_eq!(
            server.get_with_key("/v1/whoami", key).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Over a thousand is refused whole.
    let mut more = refs.clone();
    more.push(&issued[0]);
    let answer = report(&server, &github, &tokens(&more)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_revoke_keys_by_plaintext_and_no_answer_echoes_one() {
    let server = TestServer::embedded("").await;
    let first = server.create_key(|_| {}).await;
    let second = server.create_key(|_| {}).await;
    let kept = server.create_key(|_| {}).await;
    let (unknown, mistyped) = made_up_keys();
    let authorization = format!("Bearer {ADMIN_TOKEN}");
    let headers = [
        ("authorization", authorization.as_str()),
        ("content-type", "application/json"),
    ];
    let body = serde_json::json!({
        "keys": [first, second, first, unknown, mistyped, "garbage"],
        "reason": "pasted in ticket 4711",
    })
    .to_string();
    let path = "/admin/v1/keys/revoke-leaked";
    let answer = server.send(Method::POST, path, &headers, &body).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json());
    let json = answer.json();
    assert_eq!(json["revoked"].as_array().unwrap().len(), 2);
    assert_eq!(json["revoked"][0]["status"], "revoked");
    assert!(json["revoked"][0]["leaked_at"].is_string(), "{json}");
    let id = json["revoked"][0]["id"].as_str().unwrap();
    let shown = server
        .send(Method::GET, &format!("/admin/v1/keys/{id}"), &headers, "")
        .await
        .json();
    assert_eq!(shown["leaked_at"], json["revoked"][0]["leaked_at"]);
    let never = server
        .send(
            Method::GET,
            "/admin/v1/keys?account_id=acct_test",
            &headers,
            "",
        )
        .await
        .json();
    assert!(
        never["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|key| key["leaked_at"].is_null()),
        "{never}"
    );
    assert_eq!(
        json["revoked"][0]["revoked_reason"],
        "pasted in ticket 4711"
    );
    assert_eq!(json["not_found"], 3);
    for key in [&first, &second] {
        assert_eq!(
            server.get_with_key("/v1/whoami", key).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        server.get_with_key("/v1/whoami", &kept).await.status,
        StatusCode::OK
    );
    let events = leaked_events(&server).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["actor"], "bootstrap");

    // Bad input: clear 400s that name the field and never quote a key.
    let keys: Vec<String> = (0..1001).map(|_| kept.clone()).collect();
    for (body, field) in [
        (serde_json::json!({"keys": []}).to_string(), "keys"),
        (serde_json::json!({ "keys": keys }).to_string(), "keys"),
        (serde_json::json!({ "keys": kept }).to_string(), "keys"),
        (
            serde_json::json!({"keys": [kept], "reason": "x".repeat(501)}).to_string(),
            "reason",
        ),
    ] {
        let answer = server.send(Method::POST, path, &headers, &body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{field}");
        assert_eq!(answer.json()["error"]["details"]["field"], field);
        let text = String::from_utf8_lossy(&answer.body);
        assert!(!text.contains(&kept[8..]), "{text}");
    }
    assert_eq!(
        server.get_with_key("/v1/whoami", &kept).await.status,
        StatusCode::OK
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_reports_use_up_the_address_allowance() {
    let github = Partner::new("github-key-1");
    let forger = Partner::new("github-key-1");
    let keys = KeyServer::start(&[&github]).await;
    let toml = format!("max_failed_auth = \"3/minute\"\n{}", config(&keys.url, ""));
    let server = TestServer::embedded(&toml).await;
    let key = server.create_key(|_| {}).await;
    // Cached as valid, so the lockout below does not stop it.
    assert_eq!(
        server.get_with_key("/v1/whoami", &key).await.status,
        StatusCode::OK
    );
    let body = tokens(&[&key]);
    for _ in 0..3 {
        assert_eq!(
            report(&server, &forger, &body).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Spent: even GitHub's own signature waits now, and nothing changed.
    let answer = report(&server, &github, &body).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.code(), "TOO_MANY_FAILED_ATTEMPTS");
    assert!(answer.header("retry-after").is_some());
    assert_eq!(
        server.get_with_key("/v1/whoami", &key).await.status,
        StatusCode::OK
    );
    server.stop().await;
}
