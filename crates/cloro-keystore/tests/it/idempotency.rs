//! The `IdempotencyStore` contract, written once and run unchanged against
//! the memory, embedded and Redis stores (and the Redis Cluster, in
//! `redis_cluster`): claims are exclusive, answers replay, another request
//! is refused, and leases and windows end by the caller's clock.

use std::sync::Arc;
use std::time::Duration;

use cloro_keystore::{
    Claim, ClaimToken, IDEMPOTENCY_LEASE, IDEMPOTENCY_WINDOW, IdempotencySlot, IdempotencyStore,
    RequestFingerprint, StoredAnswer,
};

use crate::contract::t;

/// Runs every check against stores made by `make`. Each check uses its
/// own slots, so stores may be shared.
pub(crate) async fn run_idempotency_contract<F>(make: F)
where
    F: Fn() -> Arc<dyn IdempotencyStore>,
{
    a_claim_is_exclusive_and_names_another_request(make()).await;
    an_answer_replays_and_is_never_overwritten(make()).await;
    a_release_lets_the_next_request_run(make()).await;
    only_the_claim_token_completes_or_releases(make()).await;
    a_lapsed_lease_frees_the_slot(make()).await;
    the_window_ends_by_the_callers_clock(make()).await;
    a_retried_claim_recognises_itself(make()).await;
    scopes_and_keys_are_separate(make()).await;
    concurrent_claims_give_one_winner(make()).await;
}

fn slot(key: &str) -> IdempotencySlot {
    IdempotencySlot::new("admin", key.as_bytes())
}

fn request(body: &str) -> RequestFingerprint {
    RequestFingerprint::of(&[b"POST", b"/admin/v1/keys", body.as_bytes()])
}

fn token() -> ClaimToken {
    ClaimToken::generate().unwrap()
}

fn answer(status: u16) -> StoredAnswer {
    StoredAnswer {
        status,
        content_type: Some("application/json".to_owned()),
        code: None,
        body: format!("{{\"status\":{status},\"text\":\"caf\u{e9} \\\"quoted\\\"\"}}"),
    }
}

async fn claim(
    store: &dyn IdempotencyStore,
    slot: &IdempotencySlot,
    fingerprint: &RequestFingerprint,
    token: &ClaimToken,
    at: i64,
) -> Claim {
    store
        .claim(slot, fingerprint, token, t(at), IDEMPOTENCY_LEASE)
        .await
        .unwrap()
}

async fn a_claim_is_exclusive_and_names_another_request(store: Arc<dyn IdempotencyStore>) {
    let key = slot("exclusive");
    let first = token();
    assert_eq!(
        claim(&*store, &key, &request("a"), &first, 0).await,
        Claim::Claimed(first.clone())
    );
    assert_eq!(
        claim(&*store, &key, &request("a"), &token(), 1).await,
        Claim::InProgress
    );
    assert_eq!(
        claim(&*store, &key, &request("b"), &token(), 1).await,
        Claim::Reused
    );
}

async fn an_answer_replays_and_is_never_overwritten(store: Arc<dyn IdempotencyStore>) {
    let key = slot("replay");
    let first = token();
    claim(&*store, &key, &request("a"), &first, 0).await;
    let done = store
        .complete(&key, &first, &answer(201), t(1), IDEMPOTENCY_WINDOW)
        .await
        .unwrap();
    assert!(done);
    for at in [2, 3600, 86_000] {
        assert_eq!(
            claim(&*store, &key, &request("a"), &token(), at).await,
            Claim::Replay(answer(201)),
            "at {at}"
        );
    }
    assert_eq!(
        claim(&*store, &key, &request("b"), &token(), 5).await,
        Claim::Reused
    );
    // A release after the answer (a confused caller) keeps the answer.
    store.release(&key, &first).await.unwrap();
    assert_eq!(
        claim(&*store, &key, &request("a"), &token(), 6).await,
        Claim::Replay(answer(201))
    );
}

async fn a_release_lets_the_next_request_run(store: Arc<dyn IdempotencyStore>) {
    let key = slot("release");
    let first = token();
    claim(&*store, &key, &request("a"), &first, 0).await;
    store.release(&key, &first).await.unwrap();
    let second = token();
    assert_eq!(
        claim(&*store, &key, &request("a"), &second, 1).await,
        Claim::Claimed(second.clone())
    );
    // After a release the key is free for another request too.
    store.release(&key, &second).await.unwrap();
    let third = token();
    assert_eq!(
        claim(&*store, &key, &request("b"), &third, 2).await,
        Claim::Claimed(third)
    );
}

async fn only_the_claim_token_completes_or_releases(store: Arc<dyn IdempotencyStore>) {
    let key = slot("token");
    let owner = token();
    claim(&*store, &key, &request("a"), &owner, 0).await;
    let stranger = token();
    store.release(&key, &stranger).await.unwrap();
    assert_eq!(
        claim(&*store, &key, &request("a"), &token(), 1).await,
        Claim::InProgress
    );
    let stored = store
        .complete(&key, &stranger, &answer(200), t(1), IDEMPOTENCY_WINDOW)
        .await
        .unwrap();
    assert!(!stored);
    assert_eq!(
        claim(&*store, &key, &request("a"), &token(), 2).await,
        Claim::InProgress
    );
    // Completing a slot nobody claimed writes nothing.
    let nobody = slot("token-unclaimed");
    let stored = store
        .complete(&nobody, &owner, &answer(200), t(3), IDEMPOTENCY_WINDOW)
        .await
        .unwrap();
    assert!(!stored);
    let fresh = token();
    assert_eq!(
        claim(&*store, &nobody, &request("a"), &fresh, 4).await,
        Claim::Claimed(fresh)
    );
}

async fn a_lapsed_lease_frees_the_slot(store: Arc<dyn IdempotencyStore>) {
    let key = slot("lease");
    let crashed = token();
    claim(&*store, &key, &request("a"), &crashed, 0).await;
    let lease = i64::try_from(IDEMPOTENCY_LEASE.as_secs()).unwrap();
    assert_eq!(
        claim(&*store, &key, &request("a"), &token(), lease - 1).await,
        Claim::InProgress
    );
    let next = token();
    assert_eq!(
        claim(&*store, &key, &request("a"), &next, lease + 1).await,
        Claim::Claimed(next.clone())
    );
    // The crashed request's late completion must not land on the new claim.
    let stored = store
        .complete(
            &key,
            &crashed,
            &answer(200),
            t(lease + 2),
            IDEMPOTENCY_WINDOW,
        )
        .await
        .unwrap();
    assert!(!stored);
    assert!(
        store
            .complete(&key, &next, &answer(201), t(lease + 2), IDEMPOTENCY_WINDOW)
            .await
            .unwrap()
    );
    assert_eq!(
        claim(&*store, &key, &request("a"), &token(), lease + 3).await,
        Claim::Replay(answer(201))
    );
}

async fn the_window_ends_by_the_callers_clock(store: Arc<dyn IdempotencyStore>) {
    let key = slot("window");
    let first = token();
    claim(&*store, &key, &request("a"), &first, 0).await;
    store
        .complete(&key, &first, &answer(200), t(0), IDEMPOTENCY_WINDOW)
        .await
        .unwrap();
    let window = i64::try_from(IDEMPOTENCY_WINDOW.as_secs()).unwrap();
    assert_eq!(
        claim(&*store, &key, &request("a"), &token(), window - 1).await,
        Claim::Replay(answer(200))
    );
    // 24 h + 1 s later the key is forgotten: the same request runs again,
    // and so may another.
    let again = token();
    assert_eq!(
        claim(&*store, &key, &request("b"), &again, window + 1).await,
        Claim::Claimed(again)
    );
}

async fn a_retried_claim_recognises_itself(store: Arc<dyn IdempotencyStore>) {
    let key = slot("retried");
    let mine = token();
    claim(&*store, &key, &request("a"), &mine, 0).await;
    assert_eq!(
        claim(&*store, &key, &request("a"), &mine, 0).await,
        Claim::Claimed(mine.clone())
    );
}

async fn scopes_and_keys_are_separate(store: Arc<dyn IdempotencyStore>) {
    let shared = "separate";
    let admin = IdempotencySlot::new("admin", shared.as_bytes());
    let other = IdempotencySlot::new("tok_other", shared.as_bytes());
    let (one, two, three) = (token(), token(), token());
    assert_eq!(
        claim(&*store, &admin, &request("a"), &one, 0).await,
        Claim::Claimed(one)
    );
    assert_eq!(
        claim(&*store, &other, &request("b"), &two, 0).await,
        Claim::Claimed(two)
    );
    assert_eq!(
        claim(&*store, &slot("separate-2"), &request("a"), &three, 0).await,
        Claim::Claimed(three)
    );
}

async fn concurrent_claims_give_one_winner(store: Arc<dyn IdempotencyStore>) {
    let key = slot("concurrent");
    let fingerprint = request("a");
    let claims = (0..20).map(|_| {
        let (store, key, fingerprint) = (store.clone(), key.clone(), fingerprint.clone());
        tokio::spawn(async move {
            store
                .claim(&key, &fingerprint, &token(), t(0), Duration::from_secs(60))
                .await
                .unwrap()
        })
    });
    let mut won = 0;
    for handle in claims.collect::<Vec<_>>() {
        match handle.await.unwrap() {
            Claim::Claimed(_) => won += 1,
            Claim::InProgress => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1);
}
