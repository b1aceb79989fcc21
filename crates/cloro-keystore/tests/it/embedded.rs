//! The embedded redb store: the contract, a reopen, `kill -9` in the middle
//! of a write stream (SPEC §8), no plaintext at rest, and the file lock.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cloro_auth_core::wire::{CreateKeyRequest, Patch, RotateKeyRequest};
use cloro_auth_core::{KeyId, PlanName};
use cloro_keystore::{
    Claim, ClaimToken, EmbeddedStore, IDEMPOTENCY_LEASE, IDEMPOTENCY_WINDOW, IdempotencySlot,
    IdempotencyStore, KeyStore, PageRequest, RequestFingerprint, StoreError, StoredAnswer,
    UsageBatch, UsageDelta,
};
use jiff::Timestamp;

use crate::contract::{account, admin, t};

/// Set (to a data directory) only in the child process of the crash test.
const CRASH_WRITER_DIR: &str = "CLORO_TEST_CRASH_WRITER_DIR";
/// The writer's full name inside this test binary, for `--exact`.
const CRASH_WRITER_TEST: &str = "embedded::crash_writer";
const CRASH_ACCOUNT: &str = "acct_crash";

fn all_keys_page() -> PageRequest {
    PageRequest {
        limit: 1000,
        after: None,
    }
}

#[tokio::test]
async fn embedded_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let stores = AtomicUsize::new(0);
    crate::contract::run_contract(|| {
        let n = stores.fetch_add(1, Ordering::SeqCst);
        let store = EmbeddedStore::open(&dir.path().join(format!("store-{n}"))).unwrap();
        Arc::new(store) as Arc<dyn KeyStore>
    })
    .await;
}

#[tokio::test]
async fn embedded_store_keeps_the_idempotency_contract() {
    let dir = tempfile::tempdir().unwrap();
    let stores = AtomicUsize::new(0);
    crate::idempotency::run_idempotency_contract(|| {
        let n = stores.fetch_add(1, Ordering::SeqCst);
        let store = EmbeddedStore::open(&dir.path().join(format!("idem-{n}"))).unwrap();
        Arc::new(store) as Arc<dyn IdempotencyStore>
    })
    .await;
}

/// An answer survives a restart (a retry after a node came back replays
/// it), and neither the key nor the request body is in the file.
#[tokio::test]
async fn idempotency_records_survive_a_reopen_without_the_key_or_body() {
    let dir = tempfile::tempdir().unwrap();
    let key = "idem-key-survives-7f3a";
    let body = "{\"reason\":\"body-marker-91c2\"}";
    let slot = IdempotencySlot::new("admin", key.as_bytes());
    let fingerprint = RequestFingerprint::of(&[b"POST", b"/x", body.as_bytes()]);
    let answer = StoredAnswer {
        status: 200,
        content_type: Some("application/json".to_owned()),
        code: None,
        body: "{\"answer-marker-5d\":1}".to_owned(),
    };
    let path = {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let token = ClaimToken::generate().unwrap();
        store
            .claim(&slot, &fingerprint, &token, t(0), IDEMPOTENCY_LEASE)
            .await
            .unwrap();
        assert!(
            store
                .complete(&slot, &token, &answer, t(1), IDEMPOTENCY_WINDOW)
                .await
                .unwrap()
        );
        store.path().to_owned()
    };
    let bytes = std::fs::read(&path).unwrap();
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|window| window == needle);
    assert!(
        contains(b"answer-marker-5d"),
        "the search finds what is stored"
    );
    assert!(
        !contains(key.as_bytes()),
        "the idempotency key is in the file"
    );
    assert!(
        !contains(b"body-marker-91c2"),
        "the request body is in the file"
    );
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let again = store
        .claim(
            &slot,
            &fingerprint,
            &ClaimToken::generate().unwrap(),
            t(2),
            IDEMPOTENCY_LEASE,
        )
        .await
        .unwrap();
    assert_eq!(again, Claim::Replay(answer));
}

#[tokio::test]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let owner = account("acct_reopen");
    let plan = PlanName::new("free").unwrap();
    let (kept, rotation, revoked) = {
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let admin = admin(store.clone());
        let kept = admin
            .create(CreateKeyRequest::new(owner, "kept"), "admin", t(0))
            .await
            .unwrap();
        let old = admin
            .create(CreateKeyRequest::new(owner, "rotated"), "admin", t(1))
            .await
            .unwrap();
        let rotation = admin
            .rotate(
                &old.record.id,
                &RotateKeyRequest {
                    grace_period_seconds: 60,
                    expires_at: Patch::Absent,
                },
                "admin",
                t(2),
            )
            .await
            .unwrap();
        let revoked = admin
            .create(CreateKeyRequest::new(owner, "revoked"), "admin", t(3))
            .await
            .unwrap();
        let revoked = admin
            .revoke(&revoked.record.id, Some("leaked"), "admin", t(4))
            .await
            .unwrap();
        admin.set_plan(&owner, plan, "admin", t(5)).await.unwrap();
        let written = store
            .record_usage(&[UsageBatch {
                account_id: owner,
                node_id: 1,
                sequence: 1,
                deltas: vec![UsageDelta {
                    key_id: kept.record.id,
                    last_used_at: t(6),
                    count: 7,
                    minute: 0,
                    refused: Default::default(),
                }],
            }])
            .await;
        assert!(matches!(written[..], [Ok(())]), "{written:?}");
        (kept, rotation, revoked)
    };

    // Both handles are gone, so the file lock is free again.
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let found = store.lookup(&kept.key.hash()).await.unwrap().unwrap();
    assert_eq!(found.record, kept.record);
    assert_eq!(found.account_plan, Some(plan));
    let by_id = store.key(&kept.record.id).await.unwrap().unwrap();
    assert_eq!(
        (by_id.usage.count, by_id.usage.last_used_at),
        (7, Some(t(6)))
    );
    assert_eq!(
        store.key(&revoked.id).await.unwrap().unwrap().revoked_at,
        Some(t(4))
    );
    assert_eq!(
        store
            .key(&rotation.previous.id)
            .await
            .unwrap()
            .unwrap()
            .rotated_to,
        Some(rotation.issued.record.id)
    );
    assert!(
        store
            .lookup(&rotation.issued.key.hash())
            .await
            .unwrap()
            .is_some()
    );
    let listed = store
        .keys_of_account(&owner, &all_keys_page(), true)
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 4);
    let audit = store.audit_events(&owner, &all_keys_page()).await.unwrap();
    // created ×3, rotated, revoked, account.updated
    assert_eq!(audit.items.len(), 6);
    assert_eq!(store.account(&owner).await.unwrap().unwrap().key_count, 4);
}

/// The child half of `acknowledged_writes_survive_kill_9`: creates keys as
/// fast as it can and prints each id only once its create returned `Ok`.
/// Without the variable (an ordinary test run) it does nothing.
#[test]
fn crash_writer() {
    let Some(dir) = std::env::var_os(CRASH_WRITER_DIR) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let admin = admin(Arc::new(EmbeddedStore::open(Path::new(&dir)).unwrap()));
        // Bounded, so a child whose parent died does not write forever.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut stdout = std::io::stdout().lock();
        for n in 0.. {
            if Instant::now() > deadline {
                break;
            }
            let issued = admin
                .create(
                    CreateKeyRequest::new(account(CRASH_ACCOUNT), format!("crash {n}")),
                    "crash-writer",
                    Timestamp::now(),
                )
                .await
                .unwrap();
            // Straight to the pipe, past the test harness's capture.
            writeln!(stdout, "{}", issued.record.id).unwrap();
            stdout.flush().unwrap();
        }
    });
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acknowledged: Vec<KeyId> = Vec::new();
    // Three kills, each at a different point of the stream.
    for (round, run_for) in [120, 270, 430].into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .args([CRASH_WRITER_TEST, "--exact", "--nocapture"])
            .env(CRASH_WRITER_DIR, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            while stdout.read_line(&mut line).is_ok_and(|read| read > 0) {
                // Only a whole line is an acknowledgement; the harness's own
                // lines do not start with `key_`.
                if let Some(id) = line.strip_suffix('\n')
                    && id.starts_with("key_")
                {
                    lines.send(KeyId::new(id).unwrap()).unwrap();
                }
                line.clear();
            }
        });

        let first = match received.recv_timeout(Duration::from_secs(10)) {
            Ok(first) => first,
            Err(_) => {
                child.kill().unwrap();
                panic!("round {round}: the writer acknowledged nothing within 10 s");
            }
        };
        if round == 0 {
            // The writer holds the database: another process cannot open it.
            let error = EmbeddedStore::open(dir.path()).unwrap_err();
            let message = error.to_string();
            assert!(matches!(error, StoreError::Unavailable(_)), "{message}");
            assert!(
                message.contains("keys.redb") && message.contains("locked"),
                "{message}"
            );
        }
        std::thread::sleep(Duration::from_millis(run_for));
        child.kill().unwrap(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "round {round}: the writer should die by SIGKILL mid-stream, not {status}"
        );
        reader.join().unwrap();
        let this_round: Vec<KeyId> = std::iter::once(first).chain(received.try_iter()).collect();
        eprintln!(
            "round {round}: {} acknowledged writes in {run_for} ms before SIGKILL",
            this_round.len()
        );
        assert!(
            this_round.len() >= 5,
            "round {round}: too few writes to be mid-stream"
        );
        acknowledged.extend(this_round);

        runtime.block_on(async {
            let store = EmbeddedStore::open(dir.path())
                .unwrap_or_else(|error| panic!("round {round}: reopen after SIGKILL: {error}"));
            for id in &acknowledged {
                let record = store.key(id).await.unwrap();
                assert!(
                    record.is_some(),
                    "round {round}: acknowledged key {id} was lost"
                );
            }
            // Index and records agree: no acknowledged key is missing from
            // the listing, and every listed key reads back by its hash.
            let listed = store
                .keys_of_account(
                    &account(CRASH_ACCOUNT),
                    &PageRequest {
                        limit: 100_000,
                        after: None,
                    },
                    true,
                )
                .await
                .unwrap()
                .items;
            for id in &acknowledged {
                assert!(
                    listed.iter().any(|record| record.id == *id),
                    "round {round}: {id} not listed"
                );
            }
            for record in &listed {
                let by_hash = store.lookup(&record.hash).await.unwrap().unwrap();
                assert_eq!(by_hash.record.id, record.id);
            }
        });
    }
}

#[tokio::test]
async fn no_plaintext_key_reaches_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let owner = account("acct_plaintext");
    let mut secrets = Vec::new();
    let mut ids = Vec::new();
    let path = {
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let admin = admin(store.clone());
        for n in 0..5 {
            let issued = admin
                .create(CreateKeyRequest::new(owner, format!("k{n}")), "admin", t(n))
                .await
                .unwrap();
            let rotation = admin
                .rotate(
                    &issued.record.id,
                    &RotateKeyRequest {
                        grace_period_seconds: 30,
                        expires_at: Patch::Absent,
                    },
                    "admin",
                    t(n + 10),
                )
                .await
                .unwrap();
            ids.push(issued.record.id);
            secrets.push(issued.key.expose_secret().to_owned());
            secrets.push(rotation.issued.key.expose_secret().to_owned());
        }
        store.path().to_owned()
    };
    let bytes = std::fs::read(&path).unwrap();
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|window| window == needle);
    // The search itself works: what is stored is found.
    for id in &ids {
        assert!(
            contains(id.as_str().as_bytes()),
            "key id {id} not in the file"
        );
    }
    for secret in &secrets {
        assert!(
            !contains(secret.as_bytes()),
            "a plaintext key is in the file"
        );
        assert!(
            !contains(&secret.as_bytes()[8..40]),
            "the random part of a key is in the file"
        );
    }
}

#[test]
fn a_second_open_names_the_locked_file() {
    let dir = tempfile::tempdir().unwrap();
    let _first = EmbeddedStore::open(dir.path()).unwrap();
    let error = EmbeddedStore::open(dir.path()).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, StoreError::Unavailable(_)), "{message}");
    assert!(
        message.contains(&dir.path().join("keys.redb").display().to_string())
            && message.contains("locked"),
        "{message}"
    );
}
