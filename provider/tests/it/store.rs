//! The lease store against both backends: every scenario runs once on SQLite
//! (a temp dir) and once on a real PostgreSQL (own schema per test, so tests
//! run in parallel). PostgreSQL comes from `scripts/bootstrap postgres`, or
//! `LEASEHOLD_TEST_POSTGRES_URL`.

mod hardware;

use std::sync::atomic::{AtomicU32, Ordering};

use alloy::primitives::B256;
use leasehold_contracts::{BlockRef, CursorState};
use leasehold_provider::lease::{
    CloseReason, LeaseEvent, LeaseState, LeaseStateKind, ManifestHash,
};
use leasehold_provider::store::{NewLease, Reservation, Store, StoreError};
use sqlx::Connection;

const DEFAULT_POSTGRES_URL: &str = "postgres://leasehold:leasehold@127.0.0.1:5432/leasehold_test";
const TENANT: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// An empty database for one test; its Postgres schema goes when it is dropped.
struct TestDb {
    url: String,
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

fn postgres_base_url() -> String {
    std::env::var("LEASEHOLD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_string())
}

async fn postgres_admin() -> sqlx::PgConnection {
    let url = postgres_base_url();
    match sqlx::PgConnection::connect(&url).await {
        Ok(connection) => connection,
        Err(error) => panic!(
            "PostgreSQL at {url} is unreachable ({error}). Run `scripts/bootstrap postgres` \
             (or point LEASEHOLD_TEST_POSTGRES_URL at a server) and re-run the tests."
        ),
    }
}

impl TestDb {
    async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("temp dir: {error}"));
                // A missing data dir is created by the store.
                let file = dir.path().join("data").join("provider.db");
                let url = format!("sqlite://{}?mode=rwc", file.display());
                Self {
                    url,
                    schema: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let schema = format!(
                    "lh_test_{}_{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                );
                let mut admin = postgres_admin().await;
                for statement in [
                    format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                    format!("CREATE SCHEMA {schema}"),
                ] {
                    sqlx::query(&statement)
                        .execute(&mut admin)
                        .await
                        .unwrap_or_else(|error| panic!("{statement}: {error}"));
                }
                let base = postgres_base_url();
                let separator = if base.contains('?') { '&' } else { '?' };
                Self {
                    url: format!("{base}{separator}options[search_path]={schema}"),
                    schema: Some(schema),
                    _dir: None,
                }
            }
        }
    }

    async fn open(&self) -> Store {
        Store::connect(&self.url)
            .await
            .unwrap_or_else(|error| panic!("opening {}: {error}", self.url))
    }
}

impl Drop for TestDb {
    /// Drops the test's Postgres schema, also when the test failed. Drop runs on
    /// the test's runtime, which must not block on itself, so a fresh runtime on
    /// its own thread does the work.
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&postgres_base_url())
                    .await
                    .map_err(|error| error.to_string())?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&mut admin)
                    .await
                    .map(|_| ())
                    .map_err(|error| error.to_string())
            })
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("dropping the test schema: {error}"),
            Err(_) => eprintln!("dropping the test schema panicked"),
        }
    }
}

fn new_lease(lease_id: u64) -> NewLease {
    NewLease {
        lease_id,
        order_id: lease_id * 10,
        tenant: TENANT.to_string(),
        manifest_deadline: 1_000 + lease_id,
    }
}

fn hash(byte: u8) -> ManifestHash {
    ManifestHash([byte; 32])
}

fn ok<T>(result: Result<T, StoreError>) -> T {
    result.unwrap_or_else(|error| panic!("store: {error}"))
}

async fn migrations_apply_twice(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    ok(store.migrate().await);
    store.close().await;
    let store = db.open().await;
    ok(store.insert_won(&new_lease(1)).await);
    let mut connection = sqlx::AnyConnection::connect(&db.url)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut connection)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap_or_else(|error| panic!("{error}"))
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|entry| entry.path().extension().is_some_and(|ext| ext == "sql"))
        })
        .count();
    assert_eq!(
        applied,
        i64::try_from(files).unwrap_or(i64::MAX),
        "each migration is recorded once"
    );
    store.close().await;
}

async fn lease_lifecycle_persists_across_reopening(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let (won, inserted) = ok(store.insert_won(&new_lease(7)).await);
    assert!(inserted);
    assert_eq!(
        won.state,
        LeaseState::Won {
            manifest_deadline: 1_007
        }
    );
    assert_eq!(won.version, 0);
    let (again, inserted_again) = ok(store.insert_won(&new_lease(7)).await);
    assert!(!inserted_again, "a redelivered Won is not a new lease");
    assert_eq!(again, won);

    ok(store.apply(7, &LeaseEvent::ManifestWindowOpened).await);
    let manifest = r#"{"services":{"web":{"image":"leasehold/busybox:test"}}}"#;
    let deploying = ok(store.receive_manifest(7, hash(9), manifest).await);
    assert_eq!(
        deploying.state,
        LeaseState::Deploying {
            manifest_hash: hash(9)
        }
    );
    assert_eq!(deploying.version, 2);
    store.close().await;

    let store = db.open().await;
    let reopened = ok(store.lease(7).await);
    assert_eq!(reopened.state, deploying.state);
    assert_eq!(reopened.manifest_json.as_deref(), Some(manifest));
    assert_eq!(reopened.tenant, TENANT);
    assert_eq!(reopened.order_id, 70);
    // Redelivery of an applied event changes nothing, not even the version.
    let unchanged = ok(store.apply(7, &LeaseEvent::DeployStarted).await);
    assert_eq!(unchanged.version, 2);
    ok(store.apply(7, &LeaseEvent::DeploySucceeded).await);
    ok(store
        .apply(
            7,
            &LeaseEvent::CloseRequested {
                reason: CloseReason::TenantRequested,
            },
        )
        .await);
    store.close().await;

    let store = db.open().await;
    let closed = ok(store.apply(7, &LeaseEvent::ClosedOnChain).await);
    assert_eq!(
        closed.state,
        LeaseState::Closed {
            reason: CloseReason::TenantRequested
        }
    );
    assert_eq!(
        closed.manifest_hash,
        Some(hash(9)),
        "the hash outlives the running states"
    );
    assert_eq!(closed.version, 5);
    let refused = store.apply(7, &LeaseEvent::DeployStarted).await;
    assert!(
        matches!(refused, Err(StoreError::Transition { lease_id: 7, .. })),
        "{refused:?}"
    );
    assert_eq!(ok(store.lease(7).await), closed);
    assert!(matches!(
        store.apply(8, &LeaseEvent::DeployStarted).await,
        Err(StoreError::LeaseNotFound(8))
    ));
    store.close().await;
}

async fn won_redelivery_with_other_tenant_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    ok(store.insert_won(&new_lease(3)).await);
    let mut lowercase = new_lease(3);
    lowercase.tenant = TENANT.to_ascii_lowercase();
    let (_, inserted) = ok(store.insert_won(&lowercase).await);
    assert!(!inserted, "the tenant address compares case-insensitively");
    let mut other = new_lease(3);
    other.tenant = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC".into();
    let error = store.insert_won(&other).await;
    assert!(
        matches!(
            error,
            Err(StoreError::LeaseMismatch {
                field: "tenant",
                ..
            })
        ),
        "{error:?}"
    );
    store.close().await;
}

async fn concurrent_transitions_conflict(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let (won, _) = ok(store.insert_won(&new_lease(11)).await);
    ok(store
        .apply_at_version(11, won.version, &LeaseEvent::ManifestWindowOpened)
        .await);
    let stale = store
        .apply_at_version(
            11,
            won.version,
            &LeaseEvent::ManifestDeadlinePassed { now: 5_000 },
        )
        .await;
    assert!(
        matches!(
            stale,
            Err(StoreError::Conflict {
                lease_id: 11,
                expected: 0,
                found: 1
            })
        ),
        "{stale:?}"
    );

    // Eight writers decide on the same version at once: exactly one wins.
    let current = ok(store.lease(11).await);
    let reasons = [
        CloseReason::TenantRequested,
        CloseReason::ProviderRequested,
        CloseReason::Insolvent,
        CloseReason::ManifestTimeout,
    ];
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        let reason = reasons[writer % reasons.len()];
        let version = current.version;
        tasks.push(tokio::spawn(async move {
            let result = store
                .apply_at_version(11, version, &LeaseEvent::CloseRequested { reason })
                .await;
            (reason, result)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (reason, result) = task.await.unwrap_or_else(|error| panic!("{error}"));
        match result {
            Ok(record) => winners.push((reason, record)),
            Err(StoreError::Conflict { .. }) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer may win");
    let stored = ok(store.lease(11).await);
    assert_eq!(
        stored.state,
        LeaseState::Closing {
            reason: winners[0].0
        }
    );
    assert_eq!(stored.version, current.version + 1);

    // `apply` re-reads on conflict, so racing redeliveries all succeed with one write.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.apply(11, &LeaseEvent::ClosedOnChain).await
        }));
    }
    for task in tasks {
        let record = ok(task.await.unwrap_or_else(|error| panic!("{error}")));
        assert_eq!(record.state.kind(), LeaseStateKind::Closed);
    }
    assert_eq!(ok(store.lease(11).await).version, current.version + 2);
    store.close().await;
}

async fn cursor_round_trip(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    assert_eq!(ok(store.cursor("marketplace").await), None);
    ok(store.set_cursor("marketplace", 100).await);
    ok(store.set_cursor("registry", 7).await);
    assert_eq!(ok(store.cursor("marketplace").await), Some(100));
    // A reorg may move a follower back.
    ok(store.set_cursor("marketplace", 95).await);
    store.close().await;
    let store = db.open().await;
    assert_eq!(ok(store.cursor("marketplace").await), Some(95));
    assert_eq!(ok(store.cursor("registry").await), Some(7));
    assert!(matches!(
        store.set_cursor("marketplace", u64::MAX).await,
        Err(StoreError::OutOfRange { .. })
    ));
    // A cursor saved before checkpoints existed loads without any.
    assert_eq!(
        ok(store.cursor_state("registry").await),
        Some(CursorState::at(7))
    );
    // Position and checkpoints are one value: a rewind replaces both.
    let read = CursorState {
        next_block: 120,
        checkpoints: vec![
            BlockRef {
                number: 110,
                hash: B256::repeat_byte(1),
            },
            BlockRef {
                number: 119,
                hash: B256::repeat_byte(2),
            },
        ],
    };
    ok(store.save_cursor_state("marketplace", &read).await);
    store.close().await;
    let store = db.open().await;
    assert_eq!(
        ok(store.cursor_state("marketplace").await),
        Some(read.clone())
    );
    let rewound = CursorState {
        next_block: 111,
        checkpoints: read.checkpoints[..1].to_vec(),
    };
    ok(store.save_cursor_state("marketplace", &rewound).await);
    assert_eq!(ok(store.cursor_state("marketplace").await), Some(rewound));
    assert_eq!(ok(store.cursor("marketplace").await), Some(111));
    store.close().await;
}

async fn replay_keys_are_remembered_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let address = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";
    assert!(ok(store.remember_signature(address, "0xaa01", 1_000).await));
    assert!(!ok(store
        .remember_signature(address, "0xaa01", 1_000)
        .await));
    assert!(
        !ok(store
            .remember_signature(&address.to_uppercase().replace("0X", "0x"), "0xAA01", 1_000)
            .await),
        "address and signature compare case-insensitively"
    );
    assert!(ok(store.remember_signature(address, "0xaa02", 1_100).await));

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.remember_signature(address, "0xbb", 1_200).await
        }));
    }
    let mut fresh = 0;
    for task in tasks {
        if ok(task.await.unwrap_or_else(|error| panic!("{error}"))) {
            fresh += 1;
        }
    }
    assert_eq!(
        fresh, 1,
        "only one concurrent caller may see a signature as new"
    );

    assert_eq!(ok(store.prune_signatures(1_100).await), 1);
    assert!(
        ok(store.remember_signature(address, "0xaa01", 1_000).await),
        "pruned keys are forgotten"
    );
    assert!(
        !ok(store.remember_signature(address, "0xaa02", 1_100).await),
        "recent keys stay"
    );
    store.close().await;
}

async fn adopted_leases_history_and_failure_counts(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    // An id no column can hold is simply not stored (the gateway answers NOT_FOUND).
    assert!(ok(store.find_lease(u64::MAX).await).is_none());
    assert!(ok(store.history(u64::MAX).await).is_empty());

    let (adopted, inserted) = ok(store.insert_adopted(&new_lease(31), hash(7)).await);
    assert!(inserted);
    assert_eq!(
        adopted.state,
        LeaseState::Running {
            manifest_hash: hash(7)
        }
    );
    assert_eq!(adopted.manifest_json, None);
    let (_, again) = ok(store.insert_adopted(&new_lease(31), hash(7)).await);
    assert!(!again, "adopting twice changes nothing");
    assert!(
        !ok(store.attach_manifest(31, hash(8), "{\"other\":1}").await),
        "a manifest with another hash is not attached"
    );
    assert!(ok(store.attach_manifest(31, hash(7), "{}").await));
    assert!(
        !ok(store.attach_manifest(31, hash(7), "{}").await),
        "a stored manifest is never replaced"
    );
    assert_eq!(
        ok(store.lease(31).await).manifest_json.as_deref(),
        Some("{}")
    );

    assert_eq!(ok(store.count_deploy_failure(31).await), 1);
    assert_eq!(ok(store.count_deploy_failure(31).await), 2);
    ok(store.reset_deploy_failures(31).await);
    assert_eq!(ok(store.count_deploy_failure(31).await), 1);
    assert!(matches!(
        store.count_deploy_failure(99).await,
        Err(StoreError::LeaseNotFound(99))
    ));

    let mut tasks = Vec::new();
    for index in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .record_history(31, "step", &format!("step {index}"))
                .await
        }));
    }
    for task in tasks {
        ok(task.await.unwrap_or_else(|error| panic!("{error}")));
    }
    let history = ok(store.history(31).await);
    assert_eq!(history.len(), 6, "concurrent appends are all kept");
    assert!(history.iter().all(|entry| entry.kind == "step"));
    assert!(ok(store.history(32).await).is_empty());
    store.close().await;
}

async fn leases_are_listed_by_state(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    for lease_id in [21, 22, 23, 24] {
        ok(store.insert_won(&new_lease(lease_id)).await);
    }
    ok(store.apply(22, &LeaseEvent::ManifestWindowOpened).await);
    ok(store.apply(23, &LeaseEvent::ManifestWindowOpened).await);
    ok(store.receive_manifest(23, hash(1), "{}").await);
    ok(store.apply(23, &LeaseEvent::DeploySucceeded).await);
    ok(store
        .apply(24, &LeaseEvent::ManifestDeadlinePassed { now: 2_000 })
        .await);

    let ids = |records: Vec<leasehold_provider::store::LeaseRecord>| {
        records
            .into_iter()
            .map(|record| record.lease_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(ok(store.leases_in_state(LeaseStateKind::Won).await)),
        [21]
    );
    assert_eq!(
        ids(ok(store
            .leases_in_state(LeaseStateKind::AwaitingManifest)
            .await)),
        [22]
    );
    assert_eq!(
        ids(ok(store.leases_in_state(LeaseStateKind::Running).await)),
        [23]
    );
    let closing = ok(store.leases_in_state(LeaseStateKind::Closing).await);
    assert_eq!(closing.len(), 1);
    assert_eq!(
        closing[0].state,
        LeaseState::Closing {
            reason: CloseReason::ManifestTimeout
        }
    );
    assert!(ok(store.leases_in_state(LeaseStateKind::Closed).await).is_empty());
    // Deadlines are 1000 + lease id; 24 already timed out, 23 got its manifest.
    assert_eq!(
        ids(ok(store.leases_past_manifest_deadline(1_021).await)),
        [21]
    );
    assert_eq!(
        ids(ok(store.leases_past_manifest_deadline(1_023).await)),
        [21, 22]
    );
    store.close().await;
}

async fn reservations_expire(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let resources = serde_json::json!({"cpu_millis": 2000, "memory_mib": 4096, "gpus": ["nvidia/a100/80Gi/sxm"]});
    for (order_id, expires_at) in [(1, 100), (2, 200), (3, 300)] {
        ok(store
            .put_reservation(&Reservation {
                order_id,
                bid_id: None,
                resources: resources.clone(),
                expires_at,
            })
            .await);
    }
    let with_bid = Reservation {
        order_id: 2,
        bid_id: Some(5),
        resources: resources.clone(),
        expires_at: 250,
    };
    ok(store.put_reservation(&with_bid).await);
    assert_eq!(ok(store.reservation(2).await), Some(with_bid.clone()));
    let expired = ok(store.take_expired_reservations(250).await);
    assert_eq!(
        expired.iter().map(|r| r.order_id).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(ok(store.reservations().await).len(), 1);
    assert!(ok(store.remove_reservation(3).await));
    assert!(!ok(store.remove_reservation(3).await));
    store.close().await;
}

#[tokio::test]
async fn unreachable_postgres_reports_the_url_without_password() {
    let error = Store::connect("postgres://leasehold:hunter2@127.0.0.1:1/nowhere")
        .await
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("postgres://leasehold:***@127.0.0.1:1/nowhere"),
        "{error}"
    );
    assert!(!error.contains("hunter2"), "{error}");
}

/// Update in place: an announced revision survives reopening (a restart between the chain
/// event and the manifest), a stale or repeated announcement is ignored, and replacing the
/// manifest applies the revision and clears what it reaches.
async fn manifest_revisions_survive_reopening_and_apply_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    ok(store.insert_won(&new_lease(41)).await);
    ok(store.apply(41, &LeaseEvent::ManifestWindowOpened).await);
    let running = ok(store.receive_manifest(41, hash(1), "{\"v\":1}").await);
    let fresh = ok(store.manifest_revisions(41).await);
    assert_eq!((fresh.applied, fresh.pending), (1, None));

    assert!(ok(store.note_pending_revision(41, 2, hash(2)).await));
    assert!(
        !ok(store.note_pending_revision(41, 2, hash(2)).await),
        "a redelivered event"
    );
    store.close().await;
    let store = db.open().await;
    let pending = ok(store.manifest_revisions(41).await);
    assert_eq!((pending.applied, pending.pending), (1, Some((2, hash(2)))));

    let stale = store
        .replace_manifest(41, running.version - 1, hash(2), "{\"v\":2}", 2)
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );
    let updated = ok(store
        .replace_manifest(41, running.version, hash(2), "{\"v\":2}", 2)
        .await);
    assert_eq!(updated.manifest_hash, Some(hash(2)));
    assert_eq!(updated.state.manifest_hash(), Some(hash(2)));
    assert_eq!(updated.manifest_json.as_deref(), Some("{\"v\":2}"));
    let applied = ok(store.manifest_revisions(41).await);
    assert_eq!((applied.applied, applied.pending), (2, None));
    assert!(
        !ok(store.note_pending_revision(41, 2, hash(2)).await),
        "an event older than what runs"
    );
    ok(store.record_applied_revision(41, 1).await);
    assert_eq!(
        ok(store.manifest_revisions(41).await).applied,
        2,
        "never lowered"
    );
    ok(store.note_pending_revision(41, 4, hash(4)).await);
    ok(store.record_applied_revision(41, 4).await);
    let caught_up = ok(store.manifest_revisions(41).await);
    assert_eq!((caught_up.applied, caught_up.pending), (4, None));
    store.close().await;
}

/// The transaction lane's journal: attempts come back by nonce and attempt across a reopen,
/// settling closes every attempt of a nonce, a rejected attempt is forgotten, and accounts
/// do not see each other's transactions.
async fn sent_transactions_survive_reopening_and_settle_per_nonce(backend: Backend) {
    use alloy::primitives::{Address, B256, Bytes};
    use leasehold_contracts::{Fees, SentTx, Settlement, TxJournal};
    use leasehold_provider::store::StoreJournal;

    let db = TestDb::new(backend).await;
    let account = Address::repeat_byte(0xaa);
    let sent = |nonce: u64, attempt: u32, byte: u8| SentTx {
        nonce,
        attempt,
        tx_hash: B256::repeat_byte(byte),
        raw: Bytes::from(vec![0x02, byte]),
        purpose: "confirmLease".into(),
        // Above i64::MAX: fees are stored as decimal text.
        fees: Fees {
            max_fee_per_gas: u128::from(u64::MAX) * 3,
            max_priority_fee_per_gas: u128::from(byte),
        },
        sent_at: 1_700_000_000,
    };
    let store = db.open().await;
    let journal = StoreJournal::new(store.clone(), account);
    let other = StoreJournal::new(store.clone(), Address::repeat_byte(0xbb));
    assert_eq!(journal.last_mined_nonce().await.expect("read"), None);
    for record in [sent(7, 1, 2), sent(7, 0, 1), sent(8, 0, 3)] {
        journal.record(&record).await.expect("record");
    }
    other.record(&sent(7, 0, 9)).await.expect("record");
    store.close().await;

    let store = db.open().await;
    let journal = StoreJournal::new(store.clone(), account);
    let unsettled = journal.unsettled().await.expect("read");
    assert_eq!(unsettled, [sent(7, 0, 1), sent(7, 1, 2), sent(8, 0, 3)]);
    journal
        .settle(7, Settlement::Mined(B256::repeat_byte(2)))
        .await
        .expect("settle");
    journal.reject(B256::repeat_byte(3)).await.expect("reject");
    assert!(journal.unsettled().await.expect("read").is_empty());
    assert_eq!(journal.last_mined_nonce().await.expect("read"), Some(7));
    let other = StoreJournal::new(store.clone(), Address::repeat_byte(0xbb));
    assert_eq!(other.unsettled().await.expect("read"), [sent(7, 0, 9)]);
    assert_eq!(other.last_mined_nonce().await.expect("read"), None);
    other.settle(7, Settlement::Taken).await.expect("settle");
    assert_eq!(
        other.last_mined_nonce().await.expect("read"),
        None,
        "taken is not ours"
    );
    store.close().await;
}

macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

on_both_backends!(
    migrations_apply_twice,
    lease_lifecycle_persists_across_reopening,
    won_redelivery_with_other_tenant_is_refused,
    concurrent_transitions_conflict,
    cursor_round_trip,
    replay_keys_are_remembered_once,
    leases_are_listed_by_state,
    reservations_expire,
    adopted_leases_history_and_failure_counts,
    manifest_revisions_survive_reopening_and_apply_once,
    sent_transactions_survive_reopening_and_settle_per_nonce,
);
