//! The storage conformance suite: one body of tests, run unchanged against every backend.
//!
//! # Design
//!
//! Each test is an `async fn(Place)`: it opens the store at the place it is given and checks
//! what a caller of [`Store`] would notice. The `conformance!` macro instantiates every test
//! once per backend, in a module named after it (`sqlite::…`, `postgres::…`), so a failure says
//! which backend broke the contract. Every test gets a place of its own: a temporary directory
//! for SQLite, a new database for PostgreSQL, dropped at the end even when the test fails.
//!
//! The PostgreSQL tests use the server at `postgres://postgres@127.0.0.1:5432/postgres`, or the
//! one `CONFIANCE_TEST_PG_URL` names, and create their databases there. When it cannot be
//! reached they fail rather than skip, so that a green run always means both backends passed.
//!
//! A few tests at the end look inside PostgreSQL (its monthly partitions); they are not part of
//! the shared contract.

use confiance_core::collect::{Message, MessageType};
use confiance_core::source::{KeyDigest, Source, SourceKind, SourceName};
use confiance_store::{Access, Erasure, Role, Store, StoreError, StoredEvent, Who};
use jiff::Timestamp;
use serde_json::json;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Where a test's store lives; opening it twice reaches the same data, as a restarted node does.
#[derive(Clone)]
enum Place {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Place {
    async fn try_open(&self) -> Result<Store, StoreError> {
        match self {
            Place::Sqlite(dir) => Store::open_sqlite(dir).await,
            Place::Postgres(url) => Store::connect_postgres(url).await,
        }
    }

    async fn open(&self) -> Store {
        self.try_open().await.expect("the store opens")
    }
}

/// Runs `test` on its own task, so that a failing test still lets its caller clean up, and
/// hands the failure back.
async fn run_isolated<F, Fut>(test: F, place: Place) -> Result<(), tokio::task::JoinError>
where
    F: FnOnce(Place) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(test(place)).await
}

fn rethrow(outcome: Result<(), tokio::task::JoinError>) {
    match outcome {
        Ok(()) => {}
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the test did not finish: {e}"),
    }
}

async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Place) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::TempDir::new().expect("a temporary directory");
    let outcome = run_isolated(test, Place::Sqlite(dir.path().to_owned())).await;
    drop(dir);
    rethrow(outcome);
}

fn pg_admin_url() -> String {
    std::env::var("CONFIANCE_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is unreachable at {url}: {e} ({cause}). The PostgreSQL conformance tests need a \
                 server: start one, or point CONFIANCE_TEST_PG_URL at one.",
                cause = std::error::Error::source(&e).map(|c| c.to_string()).unwrap_or_default()
            )
        });
    tokio::spawn(connection);
    client
}

/// A database name no other test, run or concurrent process uses.
fn unique_database_name() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let random = RandomState::new().hash_one(std::time::SystemTime::now()) as u32;
    format!(
        "confiance_test_{}_{}_{random:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` with its database replaced by `name`, for both URL and `key=value` connection strings.
fn with_database(url: &str, name: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // In `key=value` form, a later key overrides an earlier one.
        return format!("{url} dbname={name}");
    };
    let (base, query) = url.split_at(url.find('?').unwrap_or(url.len()));
    let authority_end = base[scheme_end + 3..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + 3 + i);
    format!("{}/{name}{query}", &base[..authority_end])
}

async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Place) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let admin_url = pg_admin_url();
    let admin = pg_connect(&admin_url).await;
    let name = unique_database_name();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e:?}"));
    let outcome = run_isolated(test, Place::Postgres(with_database(&admin_url, &name))).await;
    // The store's pool may still be closing its connections: FORCE ends them. One statement per
    // query: several in one string run as one transaction, which DROP DATABASE refuses.
    for db in [name.clone(), format!("{name}_vault")] {
        if let Err(e) = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await
        {
            eprintln!("could not drop the test database {db}: {e:?}");
        }
    }
    rethrow(outcome);
}

macro_rules! conformance {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::on_sqlite(super::$test).await
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::on_postgres(super::$test).await
                }
            )+
        }
    };
}

conformance!(
    the_store_answers,
    emails_and_phones_are_kept_as_keyed_hashes_and_read_back_whole,
    a_store_written_with_plain_identifiers_is_rewritten_when_it_opens,
    sources_are_listed_by_name_and_found_by_key_or_name,
    consent_read_by_one_node_follows_what_another_records_and_erases,
    a_taken_source_name_is_a_conflict,
    a_message_id_is_stored_once_per_source,
    events_are_found_by_person_and_message_id_however_old_and_from_any_node,
    appending_to_an_unknown_source_fails,
    events_are_listed_per_person_in_log_order,
    instants_and_bodies_read_back_exactly,
    counters_add_up_per_source,
    tokens_keep_the_last_role_given,
    the_log_is_counted_and_summarised,
    concurrent_appends_store_each_message_once,
    reopening_keeps_everything,
    several_nodes_can_open_a_new_store_at_once,
    the_latest_decision_by_server_time_is_the_state,
    concurrent_decisions_end_with_the_last_by_server_time,
    a_purpose_read_never_returns_a_subject_without_a_legal_basis,
    reads_for_a_purpose_see_only_its_events_and_follow_withdrawals,
    messages_and_their_consent_are_stored_together,
    the_instance_secret_is_created_once,
    identities_resolve_into_profiles_as_the_log_is_read,
    a_shared_email_never_merges_two_customers,
    rebuilding_from_the_log_gives_the_same_profiles,
    undoing_a_merge_restores_the_profiles_before_it,
    several_nodes_resolving_at_once_match_one,
    the_audit_chain_verifies_and_names_the_first_altered_entry,
    writers_recording_for_the_same_people_in_any_order_never_deadlock,
    segments_are_saved_under_unique_names,
    several_nodes_syncing_members_record_each_transition_once,
    the_consent_feed_lists_decisions_in_ledger_order,
    exports_are_tasks_with_their_file,
    a_breach_touches_exactly_whose_data_came_from_its_sources_in_its_window,
    the_breach_register_keeps_every_breach_and_who_was_told,
    telling_people_of_a_breach_is_a_task_claimed_once_and_never_sent_twice,
    catalog_versions_are_kept_on_change_and_found_by_date,
    compliance_facts_are_gathered_alike,
    a_large_request_result_is_kept_compressed_and_sealed_and_read_back_whole,
    recipient_notices_are_claimed_once_retried_and_superseded_by_erasure,
);

fn at(s: &str) -> Timestamp {
    s.parse().expect("a valid instant")
}

/// An instant as the stores keep it: to the microsecond.
fn micros(t: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(t.as_microsecond()).expect("in range")
}

/// A message of `user-1`; tests change what they care about with struct update syntax.
fn message(id: &str, kind: MessageType) -> Message {
    let event = (kind == MessageType::Track).then(|| "Order Completed".to_owned());
    Message {
        message_id: id.to_owned(),
        kind,
        user_id: Some("user-1".to_owned()),
        anonymous_id: None,
        event: event.clone(),
        timestamp: at("2025-03-14T09:26:53.589793Z"),
        received_at: Timestamp::now(),
        body: json!({"type": kind.as_str(), "messageId": id, "userId": "user-1", "event": event}),
        purposes: Vec::new(),
    }
}

fn track(id: &str) -> Message {
    message(id, MessageType::Track)
}

async fn new_source(store: &Store, name: &str) -> Source {
    let name = SourceName::parse(name).expect("a valid source name");
    store
        .create_source(&name, SourceKind::Web, &KeyDigest::of(name.as_ref()), "wk_abcde")
        .await
        .expect("the source is created")
}

fn ids(events: &[StoredEvent]) -> Vec<&str> {
    events.iter().map(|e| e.message_id.as_str()).collect()
}

async fn the_store_answers(place: Place) {
    place.open().await.ping().await.expect("ping");
}

async fn sources_are_listed_by_name_and_found_by_key_or_name(place: Place) {
    let store = place.open().await;
    // `-` < `0` < `_` < `a` in bytes; a natural-language collation would order these otherwise.
    let names = ["web-shop", "a_b", "a-b", "ab", "a0", "crm"];
    let mut created = Vec::new();
    for (name, kind) in names.iter().zip(SourceKind::ALL.iter().cycle()) {
        let name = SourceName::parse(name).unwrap();
        let key = KeyDigest::of(&format!("key of {name}"));
        let source = store.create_source(&name, *kind, &key, "wk_12345").await.unwrap();
        assert_eq!(
            (&source.name, source.kind, source.key_prefix.as_str()),
            (&name, *kind, "wk_12345")
        );
        assert_eq!(store.source_by_key(&key).await.unwrap().as_ref(), Some(&source));
        assert_eq!(store.source_by_name(&name).await.unwrap().as_ref(), Some(&source));
        created.push(source);
    }

    let ids: std::collections::HashSet<i64> = created.iter().map(|s| s.id).collect();
    assert_eq!(ids.len(), names.len(), "each source has its own id");

    created.sort_by(|a, b| a.name.as_ref().as_bytes().cmp(b.name.as_ref().as_bytes()));
    assert_eq!(store.list_sources().await.unwrap(), created);

    assert_eq!(store.source_by_key(&KeyDigest::of("nobody's key")).await.unwrap(), None);
    assert_eq!(
        store
            .source_by_name(&SourceName::parse("nothing").unwrap())
            .await
            .unwrap(),
        None
    );
}

async fn a_taken_source_name_is_a_conflict(place: Place) {
    let store = place.open().await;
    let first = new_source(&store, "web").await;
    let name = SourceName::parse("web").unwrap();
    let other_key = KeyDigest::of("another key");
    let again = store
        .create_source(&name, SourceKind::Server, &other_key, "wk_other")
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(store.list_sources().await.unwrap(), vec![first]);
    assert_eq!(store.source_by_key(&other_key).await.unwrap(), None);
}

async fn a_message_id_is_stored_once_per_source(place: Place) {
    let store = place.open().await;
    let web = new_source(&store, "web").await;
    let app = new_source(&store, "app").await;

    let stored = store
        .append(web.id, vec![track("a"), track("b")], vec![])
        .await
        .unwrap();
    assert_eq!(stored.stored, [true, true]);

    // Across calls and within one call, a messageId already seen is not stored again, and the
    // first copy is the one kept.
    let first_c = Message {
        body: json!({"copy": "first"}),
        ..track("c")
    };
    let second_c = Message {
        body: json!({"copy": "second"}),
        ..track("c")
    };
    let batch = vec![track("b"), first_c, second_c, track("a"), track("d")];
    let stored = store.append(web.id, batch, vec![]).await.unwrap();
    assert_eq!(stored.stored, [false, true, false, false, true]);
    assert_eq!(stored.stored_count(), 2);

    // The same id from another source is another message.
    let stored = store.append(app.id, vec![track("a")], vec![]).await.unwrap();
    assert_eq!(stored.stored, [true]);

    assert_eq!(store.count_events().await.unwrap(), 5);
    let events = store
        .events_of(Access::Administration, &Who::UserId("user-1".into()), 0, 100)
        .await
        .unwrap();
    let logged: Vec<(i64, &str)> = events.iter().map(|e| (e.source_id, e.message_id.as_str())).collect();
    assert_eq!(
        logged,
        [
            (web.id, "a"),
            (web.id, "b"),
            (web.id, "c"),
            (web.id, "d"),
            (app.id, "a")
        ]
    );
    assert_eq!(events[2].body, json!({"copy": "first"}));
}

/// The log's lookups are right for an event appended a moment ago as for one appended long
/// enough ago to be indexed (the SQLite store indexes the events of each person and each
/// `messageId` in bulk, every half second), from any node, and after deletions.
async fn events_are_found_by_person_and_message_id_however_old_and_from_any_node(place: Place) {
    let store = place.open().await;
    let web = new_source(&store, "web").await;
    let of = |user: &str, anonymous: Option<&str>, id: &str| Message {
        user_id: Some(user.to_owned()),
        anonymous_id: anonymous.map(str::to_owned),
        ..track(id)
    };
    let events_of = |store: Store, who: Who, after: i64, limit: usize| async move {
        store
            .events_of(Access::Administration, &who, after, limit)
            .await
            .unwrap()
    };
    let user = |id: &str| Who::UserId(id.to_owned());
    let older = vec![
        of("user-1", None, "a"),
        of("user-1", Some("anon-1"), "b"),
        of("user-2", None, "x"),
    ];
    store.append(web.id, older, vec![]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    if let Place::Sqlite(dir) = &place {
        let conn = rusqlite::Connection::open(dir.join("confiance.db")).unwrap();
        let (high, folded): (i64, i64) = conn
            .query_row("SELECT high, folded FROM event_log", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((high, folded), (3, 3), "the first three events are indexed by now");
    }
    let newer = vec![of("user-1", None, "c"), of("user-2", Some("anon-1"), "y")];
    store.append(web.id, newer, vec![]).await.unwrap();

    let of_user_1 = events_of(store.clone(), user("user-1"), 0, 100).await;
    assert_eq!(ids(&of_user_1), ["a", "b", "c"]);
    let of_anon_1 = events_of(store.clone(), Who::AnonymousId("anon-1".into()), 0, 100).await;
    assert_eq!(ids(&of_anon_1), ["b", "y"]);
    assert_eq!(
        ids(&events_of(store.clone(), user("user-1"), of_user_1[0].seq, 100).await),
        ["b", "c"]
    );
    assert_eq!(ids(&events_of(store.clone(), user("user-1"), 0, 2).await), ["a", "b"]);

    // Another node refuses what this one stored, indexed or not, and the other way round.
    let other = place.open().await;
    let again = vec![
        of("user-1", None, "a"),
        of("user-1", None, "c"),
        of("user-1", None, "d"),
    ];
    assert_eq!(
        other.append(web.id, again, vec![]).await.unwrap().stored,
        [false, false, true]
    );
    assert_eq!(
        store
            .append(web.id, vec![of("user-1", None, "d")], vec![])
            .await
            .unwrap()
            .stored,
        [false]
    );

    // Erasing user-1 deletes the newest events of the log among theirs; what comes next still
    // comes after them.
    let newest = events_of(store.clone(), user("user-1"), 0, 100)
        .await
        .last()
        .unwrap()
        .seq;
    let erased = store
        .erase(erasure_of_keys(vec!["user_id:user-1".into()]))
        .await
        .unwrap();
    assert_eq!(erased.events, 4);
    assert!(events_of(store.clone(), user("user-1"), 0, 100).await.is_empty());
    assert_eq!(
        ids(&events_of(store.clone(), Who::AnonymousId("anon-1".into()), 0, 100).await),
        ["y"]
    );
    other
        .append(web.id, vec![of("user-3", None, "e")], vec![])
        .await
        .unwrap();
    let next = events_of(store.clone(), user("user-3"), 0, 100).await;
    assert!(next[0].seq > newest, "seq {} was given again", next[0].seq);
    assert_eq!(store.count_events().await.unwrap(), 3);
}

async fn appending_to_an_unknown_source_fails(place: Place) {
    let store = place.open().await;
    let outcome = store.append(4242, vec![track("a")], vec![("accepted".into(), 1)]).await;
    assert!(matches!(outcome, Err(StoreError::Database(_))), "{outcome:?}");
    assert_eq!(store.count_events().await.unwrap(), 0);
}

async fn events_are_listed_per_person_in_log_order(place: Place) {
    let store = place.open().await;
    let web = new_source(&store, "web").await;
    let as_user = |id: &str, user: &str| Message {
        user_id: Some(user.to_owned()),
        ..track(id)
    };
    let anonymous = |id: &str| Message {
        user_id: None,
        anonymous_id: Some("anon-1".to_owned()),
        ..message(id, MessageType::Page)
    };
    let both = Message {
        anonymous_id: Some("anon-1".to_owned()),
        ..message("m-identify", MessageType::Identify)
    };
    // Ids deliberately out of alphabetical order: the log keeps the order of the calls.
    store
        .append(
            web.id,
            vec![
                as_user("m9", "user-1"),
                anonymous("m8"),
                as_user("m7", "user-2"),
                both,
                as_user("m6", "user-1"),
            ],
            vec![],
        )
        .await
        .unwrap();
    store
        .append(
            web.id,
            vec![anonymous("m5"), as_user("m4", "user-1"), as_user("m3", "user-1")],
            vec![],
        )
        .await
        .unwrap();

    let user = Who::UserId("user-1".into());
    let all = store.events_of(Access::Administration, &user, 0, 100).await.unwrap();
    assert_eq!(ids(&all), ["m9", "m-identify", "m6", "m4", "m3"]);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first");

    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.events_of(Access::Administration, &user, after, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = last.seq;
        paged.extend(page);
    }
    assert_eq!(paged, all);

    assert_eq!(
        ids(&store
            .events_of(Access::Administration, &user, all[1].seq, 2)
            .await
            .unwrap()),
        ["m6", "m4"]
    );
    assert_eq!(
        ids(&store
            .events_of(Access::Administration, &user, 0, usize::MAX)
            .await
            .unwrap()),
        ids(&all)
    );
    assert!(
        store
            .events_of(Access::Administration, &user, 0, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .events_of(Access::Administration, &user, all[4].seq, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let anon = store
        .events_of(Access::Administration, &Who::AnonymousId("anon-1".into()), 0, 100)
        .await
        .unwrap();
    assert_eq!(ids(&anon), ["m8", "m-identify", "m5"]);
    assert_eq!(
        ids(&store
            .events_of(Access::Administration, &Who::UserId("user-2".into()), 0, 100)
            .await
            .unwrap()),
        ["m7"]
    );
    assert!(
        store
            .events_of(Access::Administration, &Who::UserId("anon-1".into()), 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn instants_and_bodies_read_back_exactly(place: Place) {
    let store = place.open().await;
    let web = new_source(&store, "web").await;
    let body = json!({
        "type": "identify",
        "traits": {
            "name": "Zoë Ångström 漢字 🦀",
            "escapes": "quote \" backslash \\ newline \n tab \t bell \u{7} del \u{7f}",
            "": "an empty key",
            "integers": [0, -1, i64::MIN, i64::MAX, u64::MAX],
            "floats": [0.1, -2.5e-8, 1.5, 1e300, 6.02214076e23],
            "nested": {"empty_object": {}, "empty_array": [], "null": null, "flags": [true, false]},
        },
        "context": {"ip": "192.0.2.1", "locale": "fr-FR"},
    });
    let instants = [
        // Before the Unix epoch, before PostgreSQL's (2000), nanoseconds to drop, and the far end
        // of what the stores hold.
        (at("1969-07-20T20:17:40.123456Z"), Timestamp::now()),
        (at("1999-12-31T23:59:59.999999Z"), at("2000-01-01T00:00:00.000001Z")),
        (
            at("2024-02-29T12:34:56.789012345Z"),
            at("1969-12-31T23:59:59.999999999Z"),
        ),
        (at("9999-12-30T21:59:59.999999Z"), at("0001-01-01T00:00:00Z")),
    ];
    let messages: Vec<Message> = instants
        .iter()
        .enumerate()
        .map(|(i, (timestamp, received_at))| Message {
            timestamp: *timestamp,
            received_at: *received_at,
            event: None,
            body: body.clone(),
            ..message(&format!("m{i}"), MessageType::Identify)
        })
        .collect();
    store.append(web.id, messages.clone(), vec![]).await.unwrap();

    let events = store
        .events_of(Access::Administration, &Who::UserId("user-1".into()), 0, 100)
        .await
        .unwrap();
    assert_eq!(events.len(), messages.len());
    for (got, sent) in events.iter().zip(&messages) {
        let expected = StoredEvent {
            seq: got.seq,
            source_id: web.id,
            message_id: sent.message_id.clone(),
            kind: MessageType::Identify,
            user_id: Some("user-1".into()),
            anonymous_id: None,
            event: None,
            timestamp: micros(sent.timestamp),
            received_at: micros(sent.received_at),
            body: body.clone(),
            purposes: sent.purposes.clone(),
        };
        assert_eq!(got, &expected);
    }
}

async fn counters_add_up_per_source(place: Place) {
    let store = place.open().await;
    let web = new_source(&store, "web").await;
    let app = new_source(&store, "app").await;
    let counters = |pairs: &[(&str, i64)]| pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect::<Vec<_>>();

    // A counter that does not move is not recorded.
    let given = counters(&[("rejected_size", 2), ("dropped.wrong_type", 0)]);
    store.append(web.id, vec![], given).await.unwrap();
    // A counter named twice in one call counts twice; the messages stored and skipped count
    // themselves.
    let given = counters(&[
        ("dropped.wrong_type", 1),
        ("rejected-json", 4),
        ("dropped.wrong_type", 2),
    ]);
    let batch = vec![track("a"), track("b"), track("a")];
    store.append(web.id, batch, given).await.unwrap();
    store.append(web.id, vec![track("b")], vec![]).await.unwrap();
    let given = counters(&[("rejected_size", 7)]);
    store.append(app.id, vec![], given).await.unwrap();

    // Bytewise order: `-` sorts before `_`.
    assert_eq!(
        store.source_counters(web.id).await.unwrap(),
        counters(&[
            ("accepted", 2),
            ("dropped.wrong_type", 3),
            ("duplicate", 2),
            ("rejected-json", 4),
            ("rejected_size", 2),
        ])
    );
    assert_eq!(
        store.source_counters(app.id).await.unwrap(),
        counters(&[("rejected_size", 7)])
    );
    assert!(store.source_counters(4242).await.unwrap().is_empty());
}

async fn tokens_keep_the_last_role_given(place: Place) {
    let store = place.open().await;
    let token = KeyDigest::of("ct_token");
    assert_eq!(store.token_role(&token).await.unwrap(), None);

    store.put_token(&token, Role::Admin, "ops").await.unwrap();
    assert_eq!(store.token_role(&token).await.unwrap(), Some(Role::Admin));
    store.put_token(&token, Role::Dpo, "ops, now privacy").await.unwrap();
    assert_eq!(store.token_role(&token).await.unwrap(), Some(Role::Dpo));

    for role in [Role::Admin, Role::Dpo, Role::Marketer, Role::ReadOnly] {
        let token = KeyDigest::of(role.as_str());
        store.put_token(&token, role, role.as_str()).await.unwrap();
        assert_eq!(store.token_role(&token).await.unwrap(), Some(role));
    }
}

async fn the_log_is_counted_and_summarised(place: Place) {
    let store = place.open().await;
    let web = new_source(&store, "web").await;
    let app = new_source(&store, "app").await;
    let named = |id: &str, kind: MessageType, name: Option<&str>| Message {
        event: name.map(str::to_owned),
        ..message(id, kind)
    };
    use MessageType::{Identify, Page, Track};
    store
        .append(
            web.id,
            vec![
                named("1", Track, Some("added")),
                named("2", Track, Some("Viewed")),
                named("3", Track, Some("added")),
                named("4", Page, Some("Home")),
                named("5", Page, Some("Cart")),
                named("6", Identify, None),
                named("7", Track, None),
            ],
            vec![],
        )
        .await
        .unwrap();
    store
        .append(app.id, vec![named("1", Track, Some("added"))], vec![])
        .await
        .unwrap();

    assert_eq!(store.count_events().await.unwrap(), 8);
    let row = |source: i64, kind: &str, name: Option<&str>, count: i64| {
        (source, kind.to_owned(), name.map(str::to_owned), count)
    };
    // Names count for `track` only; the order is bytewise, with missing names first.
    assert_eq!(
        store.event_summary().await.unwrap(),
        [
            row(web.id, "identify", None, 1),
            row(web.id, "page", None, 2),
            row(web.id, "track", None, 1),
            row(web.id, "track", Some("Viewed"), 1),
            row(web.id, "track", Some("added"), 2),
            row(app.id, "track", Some("added"), 1),
        ]
    );
}

async fn concurrent_appends_store_each_message_once(place: Place) {
    const TASKS: usize = 8;
    const IDS: usize = 1_000;
    const BATCH: usize = 250;
    let store = place.open().await;
    let web = new_source(&store, "web").await;

    // Every task sends every id, each starting elsewhere, and half of them backwards, so that
    // appends running at the same time share ids and meet them in opposite orders.
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let start = task * IDS / TASKS;
                let mut order: Vec<usize> = (start..start + IDS).map(|i| i % IDS).collect();
                if task % 2 == 1 {
                    order.reverse();
                }
                let mut stored = 0;
                for batch in order.chunks(BATCH) {
                    let messages = batch.iter().map(|i| track(&format!("m{i:04}"))).collect();
                    let appended = store.append(web.id, messages, vec![]).await.unwrap();
                    stored += appended.stored_count();
                }
                stored
            })
        })
        .collect();
    let mut stored = 0;
    for task in tasks {
        stored += task.await.unwrap();
    }

    assert_eq!(stored, IDS);
    assert_eq!(store.count_events().await.unwrap(), IDS as i64);
    let mut logged: Vec<String> = store
        .events_of(Access::Administration, &Who::UserId("user-1".into()), 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message_id)
        .collect();
    logged.sort();
    let expected: Vec<String> = (0..IDS).map(|i| format!("m{i:04}")).collect();
    assert_eq!(logged, expected);
    let duplicates = ((TASKS - 1) * IDS) as i64;
    assert_eq!(
        store.source_counters(web.id).await.unwrap(),
        [
            ("accepted".to_owned(), IDS as i64),
            ("duplicate".to_owned(), duplicates)
        ]
    );
}

async fn reopening_keeps_everything(place: Place) {
    let store = place.open().await;
    let web = new_source(&store, "web").await;
    store.append(web.id, vec![track("a")], vec![]).await.unwrap();
    store.put_token(&KeyDigest::of("t"), Role::Marketer, "m").await.unwrap();
    let events = store
        .events_of(Access::Administration, &Who::UserId("user-1".into()), 0, 10)
        .await
        .unwrap();
    drop(store);

    let store = place.open().await;
    assert_eq!(store.list_sources().await.unwrap(), std::slice::from_ref(&web));
    assert_eq!(
        store
            .events_of(Access::Administration, &Who::UserId("user-1".into()), 0, 10)
            .await
            .unwrap(),
        events
    );
    assert_eq!(
        store.source_counters(web.id).await.unwrap(),
        [("accepted".to_owned(), 1)]
    );
    assert_eq!(
        store.token_role(&KeyDigest::of("t")).await.unwrap(),
        Some(Role::Marketer)
    );
    let again = store
        .append(web.id, vec![track("a"), track("b")], vec![])
        .await
        .unwrap();
    assert_eq!(again.stored, [false, true]);
}

async fn several_nodes_can_open_a_new_store_at_once(place: Place) {
    let opening: Vec<_> = (0..4)
        .map(|_| {
            let place = place.clone();
            tokio::spawn(async move { place.try_open().await })
        })
        .collect();
    let mut stores = Vec::new();
    for node in opening {
        stores.push(node.await.unwrap().expect("every node opens the store"));
    }
    let web = new_source(&stores[0], "web").await;
    for store in &stores {
        assert_eq!(store.source_by_name(&web.name).await.unwrap(), Some(web.clone()));
    }
}

/// Checks of PostgreSQL's own machinery: where events land among the monthly partitions.
mod postgres_partitions {
    use super::*;

    fn partition_name(date: jiff::civil::Date) -> String {
        format!("events_{:04}_{:02}", date.year(), date.month())
    }

    /// The partition of this month, that of the next month, and when the next month begins.
    fn months_from_now() -> (String, String, Timestamp) {
        let utc = jiff::tz::TimeZone::UTC;
        let today = Timestamp::now().to_zoned(utc.clone()).date();
        let next = today.first_of_month().checked_add(jiff::Span::new().months(1)).unwrap();
        let next_start = next.to_zoned(utc).unwrap().timestamp();
        (partition_name(today), partition_name(next), next_start)
    }

    async fn partition_of(db: &tokio_postgres::Client, message_id: &str) -> String {
        db.query_one(
            "SELECT tableoid::regclass::text FROM events WHERE message_id = $1",
            &[&message_id],
        )
        .await
        .unwrap()
        .get(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_land_in_the_partition_of_their_month() {
        on_postgres(|place| async move {
            let Place::Postgres(url) = &place else { unreachable!() };
            let store = place.open().await;
            let web = new_source(&store, "web").await;
            let (this_month, next_month, next_month_start) = months_from_now();
            let old = Message {
                received_at: at("2001-01-01T00:00:00Z"),
                ..track("old")
            };
            let coming = Message {
                received_at: next_month_start,
                ..track("coming")
            };
            store
                .append(web.id, vec![track("now"), old, coming], vec![])
                .await
                .unwrap();

            let db = pg_connect(url).await;
            assert_eq!(partition_of(&db, "now").await, this_month);
            assert_eq!(partition_of(&db, "coming").await, next_month);
            assert_eq!(partition_of(&db, "old").await, "events_default");
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_month_already_in_the_default_partition_stays_there() {
        on_postgres(|place| async move {
            let Place::Postgres(url) = &place else { unreachable!() };
            let store = place.open().await;
            let web = new_source(&store, "web").await;
            let (_, next_month, next_month_start) = months_from_now();
            let db = pg_connect(url).await;
            db.batch_execute(&format!("DROP TABLE {next_month}")).await.unwrap();
            let early = Message {
                received_at: next_month_start,
                ..track("early")
            };
            store.append(web.id, vec![early], vec![]).await.unwrap();
            assert_eq!(partition_of(&db, "early").await, "events_default");
            drop(store);

            // The next node cannot give that month its partition, and starts all the same.
            let store = place.open().await;
            let exists: bool = db
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&next_month])
                .await
                .unwrap()
                .get(0);
            assert!(!exists);
            let events = store
                .events_of(Access::Administration, &Who::UserId("user-1".into()), 0, 10)
                .await
                .unwrap();
            assert_eq!(ids(&events), ["early"]);
            let stored = store.append(web.id, vec![track("later")], vec![]).await.unwrap();
            assert_eq!(stored.stored, [true]);
        })
        .await
    }
}

// ---- consent -------------------------------------------------------------------------------

use confiance_core::catalog::Catalog;
use confiance_core::consent::{ConsentView, Decision, IdKind, Method, Status, Subject};

/// The erasure of identifier keys alone, now: no profile, nothing else to suppress or notify.
fn erasure_of_keys(keys: Vec<String>) -> Erasure {
    Erasure {
        keys,
        profile: None,
        suppression: vec![],
        at: Timestamp::now(),
        notices: Vec::new(),
    }
}

fn subject(kind: IdKind, value: &str) -> Subject {
    Subject::parse(kind, value).expect("a valid subject")
}

fn decision(who: &Subject, purpose: &str, status: Status, recorded_at: Timestamp) -> Decision {
    Decision {
        subject: who.clone(),
        purpose: purpose.to_owned(),
        status,
        method: Method::Api,
        recorded_at,
        notice: None,
        source_id: None,
        touchpoint: Some("newsletter_signup".into()),
        ip_hash: Some("ab".repeat(32)),
        ua_hash: None,
        proof: json!({"form": "footer"}),
    }
}

async fn the_latest_decision_by_server_time_is_the_state(place: Place) {
    let store = place.open().await;
    let ana = subject(IdKind::Email, "ana@example.org");
    // Recorded out of order: the state follows server time, not arrival.
    let seqs = store
        .record_consents(vec![
            decision(&ana, "marketing_email", Status::Withdrawn, at("2026-03-01T00:00:00Z")),
            decision(&ana, "marketing_email", Status::Granted, at("2026-01-01T00:00:00Z")),
            decision(&ana, "marketing_sms", Status::Granted, at("2026-02-01T00:00:00Z")),
        ])
        .await
        .unwrap();
    assert_eq!(seqs.len(), 3);
    let view = store.consent_view(std::slice::from_ref(&ana)).await.unwrap();
    assert_eq!(view.get(&ana, "marketing_email").unwrap().status, Status::Withdrawn);
    assert_eq!(view.get(&ana, "marketing_sms").unwrap().status, Status::Granted);
    let history = store.consent_history(Access::DataSubject, &ana).await.unwrap();
    let statuses: Vec<(&str, Status)> = history.iter().map(|e| (e.purpose.as_str(), e.status)).collect();
    assert_eq!(
        statuses,
        [
            ("marketing_email", Status::Granted),
            ("marketing_sms", Status::Granted),
            ("marketing_email", Status::Withdrawn),
        ],
        "history in server-time order, every decision kept"
    );
    assert_eq!(history[0].proof, json!({"form": "footer"}));
    assert_eq!(history[0].touchpoint.as_deref(), Some("newsletter_signup"));
    let counts = store.consent_counts().await.unwrap();
    let total: i64 = counts.iter().map(|c| c.count).sum();
    assert_eq!(total, 2, "one current state per subject and purpose: {counts:?}");
}

async fn consent_read_by_one_node_follows_what_another_records_and_erases(place: Place) {
    let reader = place.open().await;
    let writer = place.open().await;
    let ana = subject(IdKind::Email, "ana@example.org");
    let bob = subject(IdKind::UserId, "bob");
    let both = [ana.clone(), bob.clone()];
    let status_of = |view: &ConsentView, who: &Subject| view.get(who, "analytics").map(|e| e.status);
    let first = reader.consent_view(&both).await.unwrap();
    assert_eq!((status_of(&first, &ana), status_of(&first, &bob)), (None, None));

    let mut steps = vec![
        (Status::Granted, at("2026-06-01T10:00:00Z")),
        (Status::Withdrawn, at("2026-06-01T11:00:00Z")),
        (Status::Granted, at("2026-06-01T12:00:00Z")),
    ];
    // A decision older than the state changes nothing, here or there.
    steps.push((Status::Denied, at("2026-06-01T09:00:00Z")));
    for (status, when) in steps {
        writer
            .record_consents(vec![decision(&ana, "analytics", status, when)])
            .await
            .unwrap();
        for _ in 0..2 {
            let view = reader.consent_view(&both).await.unwrap();
            let expected = if status == Status::Denied {
                Status::Granted
            } else {
                status
            };
            assert_eq!(
                (status_of(&view, &ana), status_of(&view, &bob)),
                (Some(expected), None),
                "after {status:?} at {when}"
            );
        }
    }

    // The reader's own decisions show at once too.
    reader
        .record_consents(vec![decision(
            &bob,
            "analytics",
            Status::Granted,
            at("2026-06-02T08:00:00Z"),
        )])
        .await
        .unwrap();
    let view = reader.consent_view(&both).await.unwrap();
    assert_eq!(status_of(&view, &bob), Some(Status::Granted));

    writer.erase(erasure_of_keys(vec![ana.key()])).await.unwrap();
    let view = reader.consent_view(&both).await.unwrap();
    assert_eq!(
        (status_of(&view, &ana), status_of(&view, &bob)),
        (None, Some(Status::Granted)),
        "the erased person's consent is gone for every node"
    );
}

async fn concurrent_decisions_end_with_the_last_by_server_time(place: Place) {
    let store = place.open().await;
    let bob = subject(IdKind::UserId, "bob");
    let base = at("2026-05-01T12:00:00Z");
    let mut tasks = Vec::new();
    for writer in 0..8i64 {
        let store = store.clone();
        let bob = bob.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25i64 {
                // Instants interleave across writers; the last of all is writer 7, step 24.
                let when = base
                    .checked_add(jiff::SignedDuration::from_millis(i * 8 + writer))
                    .unwrap();
                let status = if (i + writer) % 2 == 0 {
                    Status::Granted
                } else {
                    Status::Withdrawn
                };
                store
                    .record_consents(vec![decision(&bob, "analytics", status, when)])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let view = store.consent_view(std::slice::from_ref(&bob)).await.unwrap();
    let last = view.get(&bob, "analytics").unwrap();
    assert_eq!(
        last.recorded_at,
        base.checked_add(jiff::SignedDuration::from_millis(24 * 8 + 7)).unwrap()
    );
    assert_eq!(last.status, Status::Withdrawn, "(24 + 7) is odd: a withdrawal");
    let history = store.consent_history(Access::Administration, &bob).await.unwrap();
    assert_eq!(history.len(), 200, "every decision is in the history");
}

async fn a_purpose_read_never_returns_a_subject_without_a_legal_basis(place: Place) {
    let store = place.open().await;
    let catalog = Catalog::builtin();
    let marketing = &catalog.purposes["marketing_email"];
    let mut expected = Vec::new();
    let mut decisions = Vec::new();
    for i in 0..300i64 {
        let who = subject(IdKind::Email, &format!("person{i:03}@example.org"));
        // A deterministic mix: granted, granted then withdrawn, denied, withdrawn then granted
        // again, never asked (only another purpose).
        let t = |s: i64| {
            at("2026-01-01T00:00:00Z")
                .checked_add(jiff::SignedDuration::from_secs(i * 10 + s))
                .unwrap()
        };
        match i % 5 {
            0 => decisions.push(decision(&who, "marketing_email", Status::Granted, t(0))),
            1 => {
                decisions.push(decision(&who, "marketing_email", Status::Granted, t(0)));
                decisions.push(decision(&who, "marketing_email", Status::Withdrawn, t(1)));
            }
            2 => decisions.push(decision(&who, "marketing_email", Status::Denied, t(0))),
            3 => {
                decisions.push(decision(&who, "marketing_email", Status::Withdrawn, t(0)));
                decisions.push(decision(&who, "marketing_email", Status::Granted, t(1)));
            }
            _ => decisions.push(decision(&who, "marketing_sms", Status::Granted, t(0))),
        }
        if i % 5 == 0 || i % 5 == 3 {
            expected.push(who);
        }
    }
    // Phones and user ids with a grant must not leak into an export of emails.
    decisions.push(decision(
        &subject(IdKind::Phone, "+33612345678"),
        "marketing_email",
        Status::Granted,
        at("2026-01-01T00:00:00Z"),
    ));
    store.record_consents(decisions).await.unwrap();

    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = store.subjects_for(marketing, IdKind::Email, &after, 37).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.key();
        seen.extend(page);
    }
    // Pages follow the order of the keys rows keep (keyed hashes), not that of the addresses.
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected, "exactly the emails whose current decision is a grant");

    // A withdrawal takes effect for the next read.
    let first = expected[0].clone();
    store
        .record_consents(vec![decision(
            &first,
            "marketing_email",
            Status::Withdrawn,
            Timestamp::now(),
        )])
        .await
        .unwrap();
    let again = store.subjects_for(marketing, IdKind::Email, "", 1000).await.unwrap();
    assert!(!again.contains(&first));
    assert_eq!(again.len(), expected.len() - 1);
}

async fn reads_for_a_purpose_see_only_its_events_and_follow_withdrawals(place: Place) {
    let store = place.open().await;
    let web = new_source(&store, "web").await;
    let catalog = Catalog::builtin();
    let mut order = track("order-1");
    order.purposes = vec!["accounting".into(), "service".into()];
    let mut viewed = track("viewed-1");
    viewed.event = Some("Product Viewed".into());
    viewed.purposes = vec!["analytics".into()];
    let link = message("link-1", MessageType::Alias);
    store
        .append(web.id, vec![order, viewed, link], Vec::new())
        .await
        .unwrap();
    let user = Who::UserId("user-1".into());
    let ids = |events: Vec<StoredEvent>| events.into_iter().map(|e| e.message_id).collect::<Vec<_>>();

    let service = store
        .events_of(Access::Purpose(&catalog.purposes["service"]), &user, 0, 100)
        .await
        .unwrap();
    assert_eq!(ids(service), ["order-1", "link-1"]);
    let analytics = Access::Purpose(&catalog.purposes["analytics"]);
    assert!(
        store.events_of(analytics, &user, 0, 100).await.unwrap().is_empty(),
        "no consent, nothing"
    );
    let u = subject(IdKind::UserId, "user-1");
    store
        .record_consents(vec![decision(&u, "analytics", Status::Granted, Timestamp::now())])
        .await
        .unwrap();
    assert_eq!(
        ids(store.events_of(analytics, &user, 0, 100).await.unwrap()),
        ["viewed-1", "link-1"]
    );
    store
        .record_consents(vec![decision(&u, "analytics", Status::Withdrawn, Timestamp::now())])
        .await
        .unwrap();
    assert!(
        store.events_of(analytics, &user, 0, 100).await.unwrap().is_empty(),
        "withdrawn: nothing"
    );
    let all = store.events_of(Access::Administration, &user, 0, 100).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].purposes, ["accounting", "service"]);
}

async fn messages_and_their_consent_are_stored_together(place: Place) {
    let store = place.open().await;
    let web = new_source(&store, "web").await;
    let anon = subject(IdKind::AnonymousId, "browser-1");
    let mut page = message("p-1", MessageType::Page);
    page.purposes = vec!["analytics".into()];
    store
        .append_with_consent(
            web.id,
            vec![page],
            vec![decision(&anon, "analytics", Status::Granted, Timestamp::now())],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .consent_history(Access::Administration, &anon)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.count_events().await.unwrap(), 1);
    // A failing append (unknown source) stores neither the messages nor the decisions.
    let failed = store
        .append_with_consent(
            web.id + 1000,
            vec![track("t-9")],
            vec![decision(&anon, "analytics", Status::Withdrawn, Timestamp::now())],
            Vec::new(),
        )
        .await;
    assert!(failed.is_err());
    assert_eq!(
        store
            .consent_history(Access::Administration, &anon)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.count_events().await.unwrap(), 1);
}

async fn the_instance_secret_is_created_once(place: Place) {
    let store = place.open().await;
    let first = store.instance_secret().await.unwrap();
    assert_eq!(first.len(), 32);
    assert_eq!(store.instance_secret().await.unwrap(), first);
    let other_node = place.open().await;
    assert_eq!(
        other_node.instance_secret().await.unwrap(),
        first,
        "nodes of one store share it"
    );
}

// ---- unify ---------------------------------------------------------------------------------

use confiance_core::collect::{Envelope, normalize};
use confiance_core::unify::graph::Guards;
use confiance_core::unify::identifier::Identifier;
use std::sync::Arc;

fn normalized(raw: serde_json::Value) -> Message {
    normalize(raw, &Envelope::default(), &Catalog::builtin(), Timestamp::now())
        .expect("a valid message")
        .message
}

async fn resolve_all(store: &Store) {
    let catalog = Arc::new(Catalog::builtin());
    let guards = Arc::new(Guards::default());
    loop {
        let r = store.resolve_pending(catalog.clone(), guards.clone(), 7).await.unwrap();
        if r.events == 0 {
            let (cursor, head) = store.unify_status().await.unwrap();
            assert_eq!(cursor, head, "everything resolved");
            return;
        }
    }
}

async fn profile_of(store: &Store, kind: &str, value: &str) -> Option<i64> {
    store
        .profile_of(&Identifier::parse(kind, value).unwrap())
        .await
        .unwrap()
}

fn identify(id: &str, user: Option<&str>, anon: Option<&str>, traits: serde_json::Value) -> Message {
    normalized(json!({"type": "identify", "messageId": id, "userId": user, "anonymousId": anon, "traits": traits}))
}

async fn identities_resolve_into_profiles_as_the_log_is_read(place: Place) {
    let store = place.open().await;
    let web = new_source(&store, "web").await;
    let page = normalized(json!({"type": "page", "messageId": "p1", "anonymousId": "browser-a"}));
    let signup = identify("i1", Some("vc-1"), None, json!({"email": "ana@example.org"}));
    store.append(web.id, vec![page, signup], Vec::new()).await.unwrap();
    resolve_all(&store).await;
    let browser = profile_of(&store, "anonymous_id", "browser-a").await.unwrap();
    let account = profile_of(&store, "user_id", "vc-1").await.unwrap();
    assert_ne!(browser, account);
    assert_eq!(profile_of(&store, "email", "ANA@example.org").await, Some(account));

    // Logging in on the browser links both: the older profile keeps its id.
    let login = identify("i2", Some("vc-1"), Some("browser-a"), json!({}));
    store.append(web.id, vec![login], Vec::new()).await.unwrap();
    resolve_all(&store).await;
    let survivor = browser.min(account);
    assert_eq!(profile_of(&store, "anonymous_id", "browser-a").await, Some(survivor));
    assert_eq!(profile_of(&store, "user_id", "vc-1").await, Some(survivor));
    let absorbed = store
        .profile(Access::Administration, browser.max(account))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(absorbed.merged_into, Some(survivor));
    let profile = store.profile(Access::Administration, survivor).await.unwrap().unwrap();
    assert_eq!(profile.identities.len(), 3);
    let merges = store.merges_of(survivor).await.unwrap();
    assert_eq!(merges.len(), 1);
    assert_eq!(merges[0].message_id.as_deref(), Some("i2"));
    assert_eq!(merges[0].evidence["rule"], "deterministic");
}

async fn a_shared_email_never_merges_two_customers(place: Place) {
    let store = place.open().await;
    let web = new_source(&store, "web").await;
    store
        .append(
            web.id,
            vec![
                identify("a", Some("ana"), None, json!({"email": "famille@example.org"})),
                identify("b", Some("bob"), None, json!({"email": "famille@example.org"})),
                identify("c", None, Some("null"), json!({"email": "test@test.com"})),
            ],
            Vec::new(),
        )
        .await
        .unwrap();
    resolve_all(&store).await;
    let ana = profile_of(&store, "user_id", "ana").await.unwrap();
    let bob = profile_of(&store, "user_id", "bob").await.unwrap();
    assert_ne!(ana, bob);
    assert_eq!(
        profile_of(&store, "email", "famille@example.org").await,
        Some(ana),
        "it stays with the first customer"
    );
    assert_eq!(
        profile_of(&store, "email", "test@test.com").await,
        None,
        "blocked values link nothing"
    );
    assert_eq!(profile_of(&store, "anonymous_id", "null").await, None);
}

async fn people(store: &Store, web: i64, n: usize, offset: usize) {
    // Browsers, sign-ups and logins interleaved, with shared emails and aliases.
    let mut batch = Vec::new();
    for i in offset..offset + n {
        batch.push(normalized(
            json!({"type": "page", "messageId": format!("p{i}"), "anonymousId": format!("b{i}")}),
        ));
        if i % 3 != 0 {
            batch.push(identify(
                &format!("s{i}"),
                Some(&format!("u{i}")),
                None,
                json!({"email": format!("p{}@example.org", i / 2)}),
            ));
        }
        if i % 4 == 0 {
            batch.push(normalized(json!({"type": "alias", "messageId": format!("a{i}"), "userId": format!("u{i}"), "previousId": format!("b{i}")})));
        }
        if i % 5 == 0 {
            batch.push(identify(
                &format!("l{i}"),
                Some(&format!("u{i}")),
                Some(&format!("b{}", i + 1)),
                json!({}),
            ));
        }
    }
    store.append(web, batch, Vec::new()).await.unwrap();
}

async fn rebuilding_from_the_log_gives_the_same_profiles(place: Place) {
    let store = place.open().await;
    let web = new_source(&store, "web").await;
    people(&store, web.id, 60, 0).await;
    resolve_all(&store).await;
    people(&store, web.id, 40, 30).await;
    resolve_all(&store).await;
    let before = store.profiles_snapshot().await.unwrap();
    assert!(before.len() > 40 && before.len() < 140, "{}", before.len());
    store.reset_profiles().await.unwrap();
    assert!(store.profiles_snapshot().await.unwrap().is_empty());
    resolve_all(&store).await;
    assert_eq!(
        store.profiles_snapshot().await.unwrap(),
        before,
        "same ids, same identifiers"
    );
}

async fn undoing_a_merge_restores_the_profiles_before_it(place: Place) {
    let store = place.open().await;
    let web = new_source(&store, "web").await;
    store
        .append(
            web.id,
            vec![
                identify("1", None, Some("tablet"), json!({"email": "ana@example.org"})),
                identify("2", None, Some("phone-b"), json!({"phone": "+33 6 12 34 56 78"})),
            ],
            Vec::new(),
        )
        .await
        .unwrap();
    resolve_all(&store).await;
    let before = store.profiles_snapshot().await.unwrap();
    assert_eq!(before.len(), 2);
    // Someone types Bob's phone number on Ana's tablet: the guards cannot tell, the link is wrong.
    store
        .append(
            web.id,
            vec![identify("3", None, Some("tablet"), json!({"phone": "06 12 34 56 78"}))],
            Vec::new(),
        )
        .await
        .unwrap();
    resolve_all(&store).await;
    let ana = profile_of(&store, "email", "ana@example.org").await.unwrap();
    assert_eq!(
        profile_of(&store, "anonymous_id", "phone-b").await,
        Some(ana),
        "the wrong merge happened"
    );
    let merge = store.merges_of(ana).await.unwrap().pop().unwrap();
    assert_eq!(merge.message_id.as_deref(), Some("3"));
    let after = store.undo_merge(merge, Timestamp::now()).await.unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(
        store.profiles_snapshot().await.unwrap(),
        before,
        "exactly the profiles before the merge"
    );
    assert!(store.merges_of(ana).await.unwrap()[0].undone_at.is_some());
    // A rebuild from the log keeps it undone.
    store.reset_profiles().await.unwrap();
    resolve_all(&store).await;
    assert_eq!(store.profiles_snapshot().await.unwrap(), before);
}

async fn several_nodes_resolving_at_once_match_one(place: Place) {
    let store = place.open().await;
    let web = new_source(&store, "web").await;
    let nodes: Vec<Store> = vec![store.clone(), place.open().await, place.open().await];
    let mut writers = Vec::new();
    for (w, node) in nodes.iter().enumerate() {
        let node = node.clone();
        writers.push(tokio::spawn(async move {
            for round in 0..6 {
                people(&node, web.id, 10, (round * 3 + w) * 7).await;
                resolve_all_quietly(&node).await;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    // Events may still wait behind a gap the others were filling: finish on one node.
    loop {
        resolve_all_quietly(&store).await;
        let (cursor, head) = store.unify_status().await.unwrap();
        if cursor == head {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let concurrent = store.profiles_snapshot().await.unwrap();
    store.reset_profiles().await.unwrap();
    resolve_all(&store).await;
    assert_eq!(
        store.profiles_snapshot().await.unwrap(),
        concurrent,
        "no lost merge, no duplicate profile"
    );
}

async fn resolve_all_quietly(store: &Store) {
    let catalog = Arc::new(Catalog::builtin());
    let guards = Arc::new(Guards::default());
    while store
        .resolve_pending(catalog.clone(), guards.clone(), 50)
        .await
        .unwrap()
        .events
        > 0
    {}
}

// ---- identifiers at rest -------------------------------------------------------------------

impl Place {
    /// Whether `needle` is anywhere in the store's data: the bytes of the SQLite files (the
    /// database, its write-ahead log, the key vault), or a dump of the PostgreSQL database.
    async fn holds(&self, needle: &str) -> bool {
        let found = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
        match self {
            Place::Sqlite(dir) => std::fs::read_dir(dir)
                .unwrap()
                .any(|f| found(&std::fs::read(f.unwrap().path()).unwrap())),
            Place::Postgres(url) => {
                let dump = std::process::Command::new("pg_dump")
                    .args(["--data-only", url])
                    .output()
                    .expect("pg_dump runs");
                assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
                found(&dump.stdout)
            }
        }
    }
}

/// A person identified on the web with `traits` (their email among them), resolved, who agreed
/// to marketing by email: their email as a subject.
async fn identified_and_consenting(store: &Store, user: &str, traits: serde_json::Value) -> Subject {
    let web = new_source(store, "web").await;
    let email = subject(IdKind::Email, traits["email"].as_str().unwrap());
    store
        .append(web.id, vec![identify("1", Some(user), None, traits)], Vec::new())
        .await
        .unwrap();
    resolve_all(store).await;
    store
        .record_consents(vec![decision(
            &email,
            "marketing_email",
            Status::Granted,
            Timestamp::now(),
        )])
        .await
        .unwrap();
    email
}

async fn emails_and_phones_are_kept_as_keyed_hashes_and_read_back_whole(place: Place) {
    let store = place.open().await;
    // A card number that looks like a hash (64 hex digits) is hashed like any other value.
    let card = "5f".repeat(32);
    let traits = json!({"email": "hash.me@example.org", "phone": "06 11 22 33 44", "loyalty_card": card});
    let email = identified_and_consenting(&store, "u-hash", traits).await;

    let p = profile_of(&store, "email", "hash.me@example.org")
        .await
        .expect("found by email");
    assert_eq!(profile_of(&store, "phone", "+33611223344").await, Some(p));
    let row = store.profile(Access::Administration, p).await.unwrap().unwrap();
    let mut keys: Vec<&str> = row.identities.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    let card_key = format!("loyalty_card:{card}");
    assert_eq!(
        keys,
        [
            "email:hash.me@example.org",
            card_key.as_str(),
            "phone:+33611223344",
            "user_id:u-hash"
        ]
    );
    let history = store.consent_history(Access::Administration, &email).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].subject_value, "hash.me@example.org");
    let view = store.consent_view(std::slice::from_ref(&email)).await.unwrap();
    assert_eq!(
        view.effective(std::slice::from_ref(&email), "marketing_email")
            .map(|e| e.status),
        Some(Status::Granted)
    );
    let catalog = Catalog::builtin();
    let listed = store
        .subjects_for(&catalog.purposes["marketing_email"], IdKind::Email, "", 10)
        .await
        .unwrap();
    assert_eq!(listed, std::slice::from_ref(&email));
    let changes = store.consent_changes(0, Timestamp::MAX, 10).await.unwrap();
    assert_eq!(
        changes.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>(),
        [email.key()]
    );
    assert_eq!(store.profiles_of_keys(vec![email.key()]).await.unwrap(), [p]);

    // Their request names them: it is found by them, and sealed.
    let request = confiance_core::privacy::requests::Request::receive(
        confiance_core::privacy::requests::Right::Access,
        &email,
        "staff",
        true,
        json!({}),
        "staff",
        Timestamp::now(),
        &jiff::tz::TimeZone::UTC,
    );
    let request = store.insert_request(request).await.unwrap();
    let theirs = store.requests_of(std::slice::from_ref(&email)).await.unwrap();
    assert_eq!(theirs.iter().map(|r| r.id).collect::<Vec<_>>(), [request.id]);
    assert_eq!(theirs[0].subject_value, "hash.me@example.org");
    let stranger = subject(IdKind::Email, "someone.else@example.org");
    assert!(store.requests_of(&[stranger]).await.unwrap().is_empty());

    // A members export lists them: its file is sealed too.
    let export = store.create_export(1, "csv", Timestamp::now()).await.unwrap();
    let file = "profile_id,email\n1,hash.me@example.org\n".to_owned();
    store
        .finish_export(export, Ok((1, file.clone())), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(store.export_file(export).await.unwrap(), Some(file));

    // The user id keys the event log as it is; the email and the phone are nowhere in clear.
    assert!(place.holds("u-hash").await);
    for clear in ["hash.me@example.org", "+33611223344", card.as_str()] {
        assert!(!place.holds(clear).await, "`{clear}` is stored in plaintext");
    }
}

async fn a_store_written_with_plain_identifiers_is_rewritten_when_it_opens(place: Place) {
    let store = place.open().await;
    let traits = json!({"email": "old.store@example.org"});
    let email = identified_and_consenting(&store, "u-old", traits).await;
    let p = profile_of(&store, "email", "old.store@example.org").await.unwrap();
    let request = confiance_core::privacy::requests::Request::receive(
        confiance_core::privacy::requests::Right::Rectification,
        &email,
        "staff",
        true,
        json!({"traits": {"first_name": "Oldwyn"}}),
        "staff",
        Timestamp::now(),
        &jiff::tz::TimeZone::UTC,
    );
    let request = store.insert_request(request).await.unwrap();
    let plain_doc = serde_json::to_string(&request).unwrap();
    let export = store.create_export(1, "csv", Timestamp::now()).await.unwrap();
    store
        .finish_export(export, Ok((1, "x".into())), Timestamp::now())
        .await
        .unwrap();
    drop(store);
    // The rows as versions before identifiers were hashed wrote them, the rewrite pending.
    let clear = "'email:old.store@example.org'";
    place
        .tamper(&format!(
            "UPDATE requests SET subject = {clear}, doc = '{plain_doc}';
             UPDATE segment_exports SET body = 'profile_id,email\n1,old.store@example.org\n';
             DELETE FROM identifier_values;
             UPDATE identities SET identifier = {clear} WHERE kind = 'email';
             UPDATE identity_links SET a = {clear} WHERE a LIKE 'email:%';
             UPDATE identity_links SET b = {clear} WHERE b LIKE 'email:%';
             UPDATE consent_ledger SET subject = {clear};
             UPDATE consent_state SET subject = {clear};
             UPDATE settings SET value = 'pending' WHERE key = 'identifiers_at_rest';"
        ))
        .await;
    assert!(place.holds("old.store@example.org").await);
    assert!(place.holds("Oldwyn").await);

    let store = place.open().await;
    let kept = store.request(request.id).await.unwrap().unwrap();
    assert_eq!(kept.subject_value, "old.store@example.org");
    assert_eq!(kept.details["traits"]["first_name"], "Oldwyn");
    assert_eq!(
        store.export_file(export).await.unwrap().as_deref(),
        Some("profile_id,email\n1,old.store@example.org\n")
    );
    assert!(!place.holds("Oldwyn").await, "the rewrite left a request in clear");
    assert_eq!(profile_of(&store, "email", "old.store@example.org").await, Some(p));
    let row = store.profile(Access::Administration, p).await.unwrap().unwrap();
    assert!(row.identities.iter().any(|(k, _)| k == "email:old.store@example.org"));
    let view = store.consent_view(std::slice::from_ref(&email)).await.unwrap();
    assert_eq!(
        view.effective(std::slice::from_ref(&email), "marketing_email")
            .map(|e| e.status),
        Some(Status::Granted)
    );
    assert!(
        !place.holds("old.store@example.org").await,
        "the rewrite left the email in clear"
    );
    // Done once: opening again finds nothing to do and changes nothing.
    drop(store);
    let store = place.open().await;
    assert_eq!(profile_of(&store, "email", "old.store@example.org").await, Some(p));
}

// ---- audit ---------------------------------------------------------------------------------

impl Place {
    /// Runs SQL on the store's database behind its back, as an attacker with file access would.
    async fn tamper(&self, sql: &str) {
        match self {
            Place::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.join("confiance.db")).unwrap();
                conn.execute_batch(sql).unwrap();
            }
            Place::Postgres(url) => pg_connect(url).await.batch_execute(sql).await.unwrap(),
        }
    }
}

async fn the_audit_chain_verifies_and_names_the_first_altered_entry(place: Place) {
    let store = place.open().await;
    let web = new_source(&store, "web").await;
    let mut writers = Vec::new();
    for w in 0..4 {
        let node = place.open().await;
        writers.push(tokio::spawn(async move {
            for i in 0..10 {
                let who = subject(IdKind::Email, &format!("w{w}-{i}@example.org"));
                node.record_consents(vec![decision(
                    &who,
                    "marketing_email",
                    Status::Granted,
                    Timestamp::now(),
                )])
                .await
                .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    store
        .append(
            web.id,
            vec![
                identify("1", None, Some("tablet"), json!({"email": "ana@example.org"})),
                identify("2", None, Some("phone-b"), json!({"phone": "+33 6 12 34 56 78"})),
                identify("3", None, Some("tablet"), json!({"phone": "06 12 34 56 78"})),
            ],
            Vec::new(),
        )
        .await
        .unwrap();
    resolve_all(&store).await;
    let ana = profile_of(&store, "email", "ana@example.org").await.unwrap();
    let merge = store.merges_of(ana).await.unwrap().pop().unwrap();
    store.undo_merge(merge, Timestamp::now()).await.unwrap();

    assert_eq!(
        store.verify_audit().await.unwrap(),
        Ok(42),
        "40 consents, a merge, a split — all chained"
    );
    let log = store.audit_log(0, 100).await.unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "consent.recorded").count(), 40);
    assert_eq!(&actions[40..], ["profile.merged", "profile.split"]);
    assert!(
        log.iter().all(|e| !e.details.to_string().contains("example.org")),
        "no personal data in the log"
    );

    place
        .tamper("UPDATE audit_log SET actor = 'someone else' WHERE seq = 30")
        .await;
    assert_eq!(store.verify_audit().await.unwrap().unwrap_err().seq, 30);
    place.tamper("UPDATE audit_log SET details = '{\"purpose\":\"analytics\",\"status\":\"granted\",\"method\":\"api\"}' WHERE seq = 17").await;
    let broken = store.verify_audit().await.unwrap().unwrap_err();
    assert_eq!(broken.seq, 17, "the first altered entry is named: {broken}");
}

async fn writers_recording_for_the_same_people_in_any_order_never_deadlock(place: Place) {
    let store = place.open().await;
    let people: Vec<Subject> = (0..30)
        .map(|i| subject(IdKind::AnonymousId, &format!("visitor-{i}")))
        .collect();
    let mut writers = Vec::new();
    for w in 0..6 {
        let node = place.open().await;
        let mut order = people.clone();
        if w % 2 == 1 {
            order.reverse();
        }
        writers.push(tokio::spawn(async move {
            for round in 0..5 {
                let at = Timestamp::now();
                let batch: Vec<Decision> = order
                    .iter()
                    .flat_map(|s| {
                        ["analytics", "advertising"].map(|p| {
                            decision(
                                s,
                                p,
                                if round % 2 == 0 {
                                    Status::Granted
                                } else {
                                    Status::Denied
                                },
                                at,
                            )
                        })
                    })
                    .collect();
                node.record_consents(batch).await.expect("no deadlock, no error");
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let view = store.consent_view(&people).await.unwrap();
    assert!(people.iter().all(|p| view.get(p, "analytics").is_some()));
}

async fn segments_are_saved_under_unique_names(place: Place) {
    let store = place.open().await;
    let doc = json!({"purpose": "personalisation", "query": {"segment": "x"}});
    let a = store.put_segment(None, "Surfeuses", doc.clone()).await.unwrap();
    let b = store.put_segment(None, "Jazz", doc.clone()).await.unwrap();
    assert!(matches!(
        store.put_segment(None, "Surfeuses", doc.clone()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.put_segment(Some(b), "Surfeuses", doc.clone()).await,
        Err(StoreError::Conflict(_))
    ));
    let changed = json!({"purpose": "analytics", "query": {"segment": "y"}});
    assert_eq!(
        store.put_segment(Some(a), "Surfeuses", changed.clone()).await.unwrap(),
        a
    );
    let saved = store.segments().await.unwrap();
    assert_eq!(
        saved
            .iter()
            .map(|s| (s.id, s.name.as_str(), &s.doc))
            .collect::<Vec<_>>(),
        vec![(a, "Surfeuses", &changed), (b, "Jazz", &doc)]
    );
    store
        .sync_members(a, vec![1, 2], vec![], Timestamp::now(), false)
        .await
        .unwrap();
    assert!(store.delete_segment(a).await.unwrap());
    assert!(!store.delete_segment(a).await.unwrap());
    assert!(
        store.segment_members(a).await.unwrap().is_empty(),
        "its members go with it"
    );
}

async fn several_nodes_syncing_members_record_each_transition_once(place: Place) {
    let store = place.open().await;
    let seg = store
        .put_segment(None, "Parisiens", json!({"purpose": "analytics"}))
        .await
        .unwrap();
    store
        .sync_members(seg, vec![1, 2], vec![], Timestamp::now(), false)
        .await
        .unwrap();
    assert!(
        store.transitions(0, None, 100).await.unwrap().is_empty(),
        "an initial fill is silent"
    );
    // Three nodes see the same change at once: 3 enters, 1 leaves.
    let nodes: Vec<Store> = vec![store.clone(), place.open().await, place.open().await];
    let mut syncs = Vec::new();
    for node in nodes {
        syncs.push(tokio::spawn(async move {
            node.sync_members(seg, vec![2, 3], vec![1], Timestamp::now(), true)
                .await
                .unwrap()
        }));
    }
    let mut changed = (0, 0);
    for s in syncs {
        let (i, d) = s.await.unwrap();
        changed = (changed.0 + i, changed.1 + d);
    }
    assert_eq!(changed, (1, 1), "one node made each change");
    let moves: Vec<(i64, bool)> = store
        .transitions(0, None, 100)
        .await
        .unwrap()
        .iter()
        .map(|t| (t.profile_id, t.entered))
        .collect();
    assert_eq!(moves.len(), 2, "{moves:?}");
    assert!(moves.contains(&(3, true)) && moves.contains(&(1, false)), "{moves:?}");
    assert_eq!(store.segment_members(seg).await.unwrap(), vec![2, 3]);
    let of_three = store.transitions(0, Some(3), 100).await.unwrap();
    assert_eq!(of_three.len(), 1);
    assert!(
        store
            .transitions(of_three[0].seq, Some(3), 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn the_consent_feed_lists_decisions_in_ledger_order(place: Place) {
    let store = place.open().await;
    let decide = |who: &str, status: Status, when: &str| Decision {
        subject: Subject::parse(IdKind::Email, who).unwrap(),
        purpose: "analytics".into(),
        status,
        method: Method::Api,
        recorded_at: at(when),
        notice: None,
        source_id: None,
        touchpoint: None,
        ip_hash: None,
        ua_hash: None,
        proof: json!({}),
    };
    // One call each: within a call, PostgreSQL writes in the order of the subjects' keys.
    let mut seqs = Vec::new();
    for (email, when) in [
        ("ana@example.org", "2026-01-01T00:00:00Z"),
        ("bob@example.org", "2026-01-02T00:00:00Z"),
    ] {
        seqs.extend(
            store
                .record_consents(vec![decide(email, Status::Granted, when)])
                .await
                .unwrap(),
        );
    }
    let late = Timestamp::MAX;
    let all = store.consent_changes(0, late, 10).await.unwrap();
    assert_eq!(
        all,
        vec![
            (seqs[0], "email:ana@example.org".to_owned()),
            (seqs[1], "email:bob@example.org".to_owned())
        ]
    );
    assert_eq!(
        store.consent_changes(seqs[0], late, 10).await.unwrap(),
        all[1..].to_vec()
    );
    assert_eq!(
        store
            .consent_changes(seqs[1], at("2026-01-01T12:00:00Z"), 10)
            .await
            .unwrap(),
        all[1..].to_vec(),
        "recent decisions are listed again, whatever their position"
    );
    let (ledger, _) = store.feed_heads().await.unwrap();
    assert_eq!(ledger, seqs[1]);
}

async fn exports_are_tasks_with_their_file(place: Place) {
    let store = place.open().await;
    let t = store.create_export(7, "csv", at("2026-02-01T00:00:00Z")).await.unwrap();
    let queued = store.export(t).await.unwrap().unwrap();
    assert_eq!((queued.status.as_str(), queued.body.as_deref()), ("enqueued", None));
    store
        .finish_export(t, Ok((2, "profile_id\n1\n2\n".into())), at("2026-02-01T00:00:01Z"))
        .await
        .unwrap();
    let done = store.export(t).await.unwrap().unwrap();
    assert_eq!((done.status.as_str(), done.rows), ("succeeded", Some(2)));
    assert_eq!(done.body, None, "a status comes without the file");
    assert_eq!(
        store.export_file(t).await.unwrap().as_deref(),
        Some("profile_id\n1\n2\n")
    );
    let f = store
        .create_export(7, "json", at("2026-02-01T00:00:00Z"))
        .await
        .unwrap();
    store
        .finish_export(f, Err("the segment was deleted".into()), Timestamp::now())
        .await
        .unwrap();
    let failed = store.export(f).await.unwrap().unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.error.as_deref()),
        ("failed", Some("the segment was deleted"))
    );
    assert!(store.export(f + 100).await.unwrap().is_none());
}

// ---- breaches ------------------------------------------------------------------------------

use confiance_store::{Touched, TouchedQuery};

/// Whether an event carries a non-null value of `name` where golden records read traits.
fn carries(e: &StoredEvent, name: &str) -> bool {
    let own =
        e.kind == MessageType::Identify && e.body.pointer(&format!("/traits/{name}")).is_some_and(|v| !v.is_null());
    own || e
        .body
        .pointer(&format!("/context/traits/{name}"))
        .is_some_and(|v| !v.is_null())
}

/// The brute-force answer: every event read back, checked one by one in Rust.
async fn touched_by_scan(store: &Store, q: &TouchedQuery) -> Touched {
    let mut events = Vec::new();
    loop {
        let page = store
            .events_page(events.last().map_or(0, |e: &StoredEvent| e.seq), 100)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        events.extend(page);
    }
    let mut per_profile = std::collections::BTreeMap::<i64, i64>::new();
    let mut unresolved = 0;
    for e in events.iter().filter(|e| {
        q.sources.contains(&e.source_id)
            && q.after.is_none_or(|a| e.seq > a)
            && e.received_at < q.to
            && q.from.is_none_or(|f| e.received_at >= f)
            && q.traits.iter().any(|t| carries(e, t))
    }) {
        let mut profile = None;
        if let Some(u) = &e.user_id {
            profile = profile_of(store, "user_id", u).await;
        }
        if profile.is_none()
            && let Some(a) = &e.anonymous_id
        {
            profile = profile_of(store, "anonymous_id", a).await;
        }
        match profile {
            Some(p) => *per_profile.entry(p).or_default() += 1,
            None => unresolved += 1,
        }
    }
    Touched {
        profiles: per_profile.into_iter().collect(),
        unresolved_records: unresolved,
    }
}

async fn a_breach_touches_exactly_whose_data_came_from_its_sources_in_its_window(place: Place) {
    let store = place.open().await;
    let web = new_source(&store, "web").await;
    let app = new_source(&store, "app").await;
    let start = at("2026-01-01T00:00:00Z");
    // A small deterministic generator: every kind of message, source and day, mixed.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut batches: [Vec<Message>; 2] = [Vec::new(), Vec::new()];
    for i in 0..300 {
        let user = format!("u{}", next(60));
        let anon = format!("a{}", next(90));
        let (user, anon) = match next(3) {
            0 => (Some(user.as_str()), None),
            1 => (None, Some(anon.as_str())),
            _ => (Some(user.as_str()), Some(anon.as_str())),
        };
        let email = json!(format!("p{}@example.org", next(60)));
        let raw = match next(5) {
            0 => {
                json!({"type": "identify", "messageId": format!("m{i}"), "userId": user, "anonymousId": anon, "traits": {"email": email}})
            }
            1 => {
                json!({"type": "identify", "messageId": format!("m{i}"), "userId": user, "anonymousId": anon, "traits": {"email": null, "first_name": "Ana"}})
            }
            2 => {
                json!({"type": "track", "event": "Order Completed", "messageId": format!("m{i}"), "userId": user, "anonymousId": anon, "context": {"traits": {"email": email}}})
            }
            3 => {
                json!({"type": "identify", "messageId": format!("m{i}"), "userId": user, "anonymousId": anon, "traits": {"phone": "+33612345678"}})
            }
            _ => json!({"type": "page", "messageId": format!("m{i}"), "userId": user, "anonymousId": anon}),
        };
        let mut m = normalized(raw);
        m.received_at = start + jiff::SignedDuration::from_hours(i64::try_from(next(120 * 24)).unwrap());
        batches[usize::try_from(next(2)).unwrap()].push(m);
    }
    let [on_web, on_app] = batches;
    let (late_web, on_web) = on_web.split_at(10);
    store.append(web.id, on_web.to_vec(), Vec::new()).await.unwrap();
    store.append(app.id, on_app, Vec::new()).await.unwrap();
    resolve_all(&store).await;
    // Received but not yet resolved into profiles: counted, not attributed.
    store.append(web.id, late_web.to_vec(), Vec::new()).await.unwrap();

    let emails_from_web = TouchedQuery {
        traits: vec!["email".into()],
        sources: vec![web.id],
        from: Some(at("2026-02-01T00:00:00Z")),
        to: at("2026-03-15T00:00:00Z"),
        after: None,
    };
    let everything = TouchedQuery {
        traits: vec!["email".into(), "phone".into()],
        sources: vec![web.id, app.id],
        from: None,
        to: at("2027-01-01T00:00:00Z"),
        after: None,
    };
    // What an in-memory index has not read yet: the events after a position of the log.
    let (resolved, _) = store.unify_status().await.unwrap();
    let tail = TouchedQuery {
        after: Some(resolved / 2),
        ..everything.clone()
    };
    for q in [emails_from_web, everything, tail] {
        let expected = touched_by_scan(&store, &q).await;
        assert!(!expected.profiles.is_empty(), "the scenario touches someone");
        assert_eq!(store.breach_touched(&q).await.unwrap(), expected, "{q:?}");
    }
    let everyone = TouchedQuery {
        traits: vec!["email".into()],
        sources: vec![web.id, app.id],
        from: None,
        to: at("2027-01-01T00:00:00Z"),
        after: None,
    };
    let touched = store.breach_touched(&everyone).await.unwrap();
    assert!(touched.unresolved_records > 0, "the late messages are counted");

    // A profile's events that carry traits, read from the names kept beside them, are those
    // whose bodies carry traits, in log order, from any position.
    let mut compared = 0;
    for (p, _) in &touched.profiles {
        let events = store
            .profile_events(Access::Administration, *p, 0, 10_000)
            .await
            .unwrap();
        let from_bodies: Vec<(i64, i64, Vec<String>)> = events
            .iter()
            .filter_map(|e| {
                let names = confiance_core::collect::carried_traits(e.kind, &e.body);
                (!names.is_empty()).then(|| (e.seq, e.source_id, names.into_iter().map(str::to_owned).collect()))
            })
            .collect();
        let kept = store.profile_carries(*p, 0).await.unwrap();
        let kept_view: Vec<(i64, i64, Vec<String>)> = kept
            .iter()
            .map(|c| (c.carry.seq, c.carry.source, c.carry.traits.clone()))
            .collect();
        assert_eq!(kept_view, from_bodies, "profile {p}");
        if let Some(first) = kept.first() {
            let after = store.profile_carries(*p, first.carry.seq).await.unwrap();
            assert_eq!(after, kept[1..], "profile {p} after {}", first.carry.seq);
            compared += 1;
        }
    }
    assert!(compared > 10, "the scenario compares many profiles");
}

async fn the_breach_register_keeps_every_breach_and_who_was_told(place: Place) {
    use confiance_core::privacy::breach::{Breach, Declaration, Phase, Scope, Wording};
    use confiance_store::BreachNotice;
    let store = place.open().await;
    let now = at("2026-03-02T12:00:00Z");
    let declare = |nature: &str, aware: &str| Declaration {
        aware_at: at(aware),
        scope: Scope {
            traits: vec!["email".into()],
            to: at("2026-03-01T00:00:00Z"),
            ..Scope::default()
        },
        wording: Wording {
            nature: nature.into(),
            ..Wording::default()
        },
        wording_en: None,
    };
    let first = Breach::declare(
        declare("Sauvegarde perdue", "2026-02-01T00:00:00Z"),
        &Catalog::builtin(),
        "admin:a",
        now,
    )
    .unwrap();
    let second = Breach::declare(
        declare("Courriel mal adressé", "2026-03-01T00:00:00Z"),
        &Catalog::builtin(),
        "admin:a",
        now,
    )
    .unwrap();
    let first = store.insert_breach(first).await.unwrap();
    let mut second = store.insert_breach(second).await.unwrap();
    assert_ne!(first.id, second.id);
    second
        .update(Phase::Complementary, None, "Périmètre confirmé".into(), "dpo:b", now)
        .unwrap();
    store
        .update_breach(&second, "breach.updated", "dpo:b", now)
        .await
        .unwrap();
    assert_eq!(store.breach(second.id).await.unwrap().as_ref(), Some(&second));
    let register: Vec<i64> = store.breaches().await.unwrap().iter().map(|b| b.id).collect();
    assert_eq!(register, [second.id, first.id], "latest awareness first");

    let sent = BreachNotice {
        profile_id: 7,
        channel: "email".into(),
        status: "failed".into(),
        detail: Some("refused".into()),
        at: now,
    };
    store.record_breach_notice(second.id, &sent).await.unwrap();
    let retried = BreachNotice {
        status: "sent".into(),
        detail: None,
        ..sent.clone()
    };
    store.record_breach_notice(second.id, &retried).await.unwrap();
    assert_eq!(store.breach_notices(second.id).await.unwrap(), [retried]);
    assert!(store.breach_notices(first.id).await.unwrap().is_empty());
    let audit = store.audit_log(0, 100).await.unwrap();
    let breach_actions = audit.iter().filter(|e| e.action.starts_with("breach.")).count();
    assert_eq!(breach_actions, 3);
}

async fn telling_people_of_a_breach_is_a_task_claimed_once_and_never_sent_twice(place: Place) {
    use confiance_core::privacy::breach::{Breach, Declaration, Scope, Wording};
    use confiance_store::{BreachNotice, Erasure, INTERRUPTED, NoticePlan, notice_counts};
    let store = place.open().await;
    let now = at("2026-03-02T12:00:00Z");
    let minutes = |n: i64| jiff::SignedDuration::from_mins(n);
    let declaration = Declaration {
        aware_at: at("2026-03-01T00:00:00Z"),
        scope: Scope {
            traits: vec!["email".into()],
            to: now,
            ..Scope::default()
        },
        wording: Wording {
            nature: "Sauvegarde perdue".into(),
            ..Wording::default()
        },
        wording_en: None,
    };
    let breach = Breach::declare(declaration, &Catalog::builtin(), "admin:a", now).unwrap();
    let breach = store.insert_breach(breach).await.unwrap();

    let (job, new) = store.enqueue_breach_job(breach.id, "fr", "admin:a", now).await.unwrap();
    assert!(new);
    assert_eq!((job.status.as_str(), job.breach_id), ("enqueued", breach.id));
    let (same, new) = store.enqueue_breach_job(breach.id, "en", "admin:b", now).await.unwrap();
    assert_eq!((same.id, new), (job.id, false), "one open task per breach");

    let claimed = store.claim_breach_job(now, now + minutes(10)).await.unwrap().unwrap();
    assert_eq!((claimed.id, claimed.status.as_str()), (job.id, "processing"));
    assert_eq!(
        store
            .claim_breach_job(now + minutes(5), now + minutes(15))
            .await
            .unwrap(),
        None
    );

    // Profile 3 was told by an earlier request: planning leaves it sent.
    let earlier = BreachNotice {
        profile_id: 3,
        channel: "email".into(),
        status: "sent".into(),
        detail: None,
        at: now,
    };
    store.record_breach_notice(breach.id, &earlier).await.unwrap();
    let plan = NoticePlan {
        notices: vec![
            (1, "email".into()),
            (1, "sms".into()),
            (2, "email".into()),
            (3, "email".into()),
        ],
        unreachable: vec![4],
        people: 4,
        already_told: 1,
    };
    store.plan_breach_job(&claimed, plan, now).await.unwrap();
    let pending = store.pending_breach_notices(breach.id, 10).await.unwrap();
    assert_eq!(
        pending,
        [(1, "email".to_owned()), (1, "sms".to_owned()), (2, "email".to_owned())]
    );
    assert_eq!(store.pending_breach_notices(breach.id, 1).await.unwrap().len(), 1);
    let jobs = store.breach_jobs(breach.id).await.unwrap();
    assert_eq!((jobs[0].people, jobs[0].already_told), (Some(4), Some(1)));
    assert_eq!(jobs[0].planned_at, Some(micros(now)));

    assert!(store.start_breach_notice(breach.id, 1, "email", now).await.unwrap());
    assert!(
        !store.start_breach_notice(breach.id, 1, "email", now).await.unwrap(),
        "only one sender"
    );
    let told = BreachNotice {
        profile_id: 1,
        channel: "email".into(),
        status: "sent".into(),
        detail: None,
        at: now,
    };
    assert!(store.end_breach_notice(breach.id, &told).await.unwrap());
    assert!(
        !store.end_breach_notice(breach.id, &told).await.unwrap(),
        "only a notice being sent is ended"
    );
    assert!(store.start_breach_notice(breach.id, 1, "sms", now).await.unwrap());

    // The worker dies; after its lease another one takes over: the sms in flight is not resent.
    let resumed = store
        .claim_breach_job(now + minutes(11), now + minutes(21))
        .await
        .unwrap()
        .expect("an expired lease is taken over");
    assert_eq!(resumed.id, job.id);
    let notices = store.breach_notices(breach.id).await.unwrap();
    let sms = notices.iter().find(|n| n.channel == "sms").unwrap();
    assert_eq!(
        (sms.status.as_str(), sms.detail.as_deref()),
        ("failed", Some(INTERRUPTED))
    );
    let counts = notice_counts(&notices);
    assert_eq!((counts["pending"], counts["sent"], counts["failed"]), (1, 2, 2));
    assert_eq!(
        store.pending_breach_notices(breach.id, 10).await.unwrap(),
        [(2, "email".to_owned())]
    );

    // The first worker, back, finds its lease gone: it may neither renew nor finish the job.
    assert!(
        !store
            .renew_breach_job(job.id, now + minutes(10), now + minutes(30))
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_breach_job(job.id, now + minutes(10), None, now + minutes(12))
            .await
            .unwrap()
    );
    assert!(
        store
            .renew_breach_job(job.id, now + minutes(21), now + minutes(22))
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_breach_job(job.id, now + minutes(22), None, now + minutes(12))
            .await
            .unwrap()
    );
    let finished = &store.breach_jobs(breach.id).await.unwrap()[0];
    assert_eq!(
        (finished.status.as_str(), finished.finished_at),
        ("succeeded", Some(micros(now + minutes(12))))
    );
    assert_eq!(
        store
            .claim_breach_job(now + minutes(60), now + minutes(70))
            .await
            .unwrap(),
        None
    );
    let (next, new) = store.enqueue_breach_job(breach.id, "fr", "admin:a", now).await.unwrap();
    assert!(new && next.id != job.id, "a closed task lets a new one open");

    // A person's notices are found by profile, and go with them when they are erased.
    let of_one: Vec<(i64, String)> = store
        .breach_notices_of(1)
        .await
        .unwrap()
        .into_iter()
        .map(|(b, n)| (b, n.channel))
        .collect();
    assert_eq!(of_one, [(breach.id, "email".to_owned()), (breach.id, "sms".to_owned())]);
    store
        .erase(Erasure {
            keys: vec!["email:one@example.org".into()],
            profile: Some(1),
            suppression: vec![],
            at: now,
            notices: Vec::new(),
        })
        .await
        .unwrap();
    assert!(store.breach_notices_of(1).await.unwrap().is_empty());
    let left: Vec<i64> = store
        .breach_notices(breach.id)
        .await
        .unwrap()
        .iter()
        .map(|n| n.profile_id)
        .collect();
    assert_eq!(left, [2, 3, 4]);
    // The sms being sent when they were erased ends without bringing their row back.
    let late = BreachNotice {
        channel: "sms".into(),
        ..told
    };
    assert!(!store.end_breach_notice(breach.id, &late).await.unwrap());
    assert!(store.breach_notices_of(1).await.unwrap().is_empty());
}

async fn catalog_versions_are_kept_on_change_and_found_by_date(place: Place) {
    let store = place.open().await;
    let (t1, t2) = (at("2026-01-01T00:00:00Z"), at("2026-06-01T00:00:00Z"));
    let v1 = store
        .record_catalog_version("h1", json!({"a": 1}), json!({"r": 1}), t1)
        .await
        .unwrap();
    assert_eq!(v1, (1, true));
    let again = store
        .record_catalog_version("h1", json!({"a": 1}), json!({"r": 1}), t2)
        .await
        .unwrap();
    assert_eq!(again, (1, false), "an unchanged catalog is no new version");
    let v2 = store
        .record_catalog_version("h2", json!({"a": 2}), json!({"r": 2}), t2)
        .await
        .unwrap();
    assert_eq!(v2, (2, true));
    let in_march = store.catalog_versions(Some(at("2026-03-01T00:00:00Z"))).await.unwrap();
    assert_eq!(in_march.len(), 1);
    assert_eq!((in_march[0].taken_at, &in_march[0].register), (t1, &json!({"r": 1})));
    let all = store.catalog_versions(None).await.unwrap();
    assert_eq!(all.iter().map(|v| v.hash.as_str()).collect::<Vec<_>>(), ["h1", "h2"]);
    assert!(
        store
            .catalog_versions(Some(at("2025-12-31T00:00:00Z")))
            .await
            .unwrap()
            .is_empty()
    );

    assert!(store.record_notice("1", "n1", "texte 1", t1).await.unwrap());
    assert!(!store.record_notice("1", "n1", "texte 1", t2).await.unwrap());
    assert!(store.record_notice("2", "n2", "texte 2", t2).await.unwrap());
    let notices = store.notices().await.unwrap();
    assert_eq!(notices.len(), 2);
    assert_eq!((notices[0].published_from, notices[0].published_until), (t1, Some(t2)));
    assert_eq!(
        (notices[1].text.as_str(), notices[1].published_until),
        ("texte 2", None)
    );
}

async fn compliance_facts_are_gathered_alike(place: Place) {
    use confiance_core::consent::{Decision, IdKind, Method, Status, Subject};
    let store = place.open().await;
    let decide = |who: &str, status: Status, when: &str, proof: serde_json::Value| Decision {
        subject: Subject::parse(IdKind::Email, who).unwrap(),
        purpose: "analytics".into(),
        status,
        method: Method::Api,
        recorded_at: at(when),
        notice: None,
        source_id: None,
        touchpoint: None,
        ip_hash: None,
        ua_hash: None,
        proof,
    };
    let seqs = store
        .record_consents(vec![
            decide(
                "ana@example.org",
                Status::Granted,
                "2026-01-01T00:00:00Z",
                serde_json::Value::Null,
            ),
            decide(
                "bob@example.org",
                Status::Granted,
                "2026-05-01T00:00:00Z",
                json!({"form": "f"}),
            ),
            decide(
                "eve@example.org",
                Status::Denied,
                "2026-01-02T00:00:00Z",
                serde_json::Value::Null,
            ),
        ])
        .await
        .unwrap();
    assert_eq!(store.unproven_grants(10).await.unwrap(), vec![seqs[0]]);
    let stale = store.stale_choices(at("2026-03-01T00:00:00Z")).await.unwrap();
    assert_eq!(
        stale,
        vec![
            ("analytics".to_owned(), "denied".to_owned(), 1),
            ("analytics".to_owned(), "granted".to_owned(), 1)
        ]
    );

    assert_eq!(store.last_audit("retention.applied").await.unwrap(), None);
    store
        .expire_events(Vec::new(), Vec::new(), at("2026-02-01T00:00:00Z"), json!({}))
        .await
        .unwrap();
    store
        .expire_events(Vec::new(), Vec::new(), at("2026-02-02T00:00:00Z"), json!({}))
        .await
        .unwrap();
    assert_eq!(
        store.last_audit("retention.applied").await.unwrap(),
        Some(at("2026-02-02T00:00:00Z"))
    );

    let web = new_source(&store, "web").await;
    let tills = new_source(&store, "tills").await;
    let identify = |id: &str, user: &str, traits: serde_json::Value| Message {
        user_id: Some(user.to_owned()),
        body: json!({"type": "identify", "messageId": id, "userId": user, "traits": traits}),
        ..message(id, MessageType::Identify)
    };
    store
        .append(
            web.id,
            vec![
                identify("m1", "u1", json!({"city": "Lyon", "email": "u1@example.org"})),
                identify("m2", "u2", json!({"city": "Paris"})),
                identify("m3", "u1", json!({"city": "Lyon"})),
            ],
            Vec::new(),
        )
        .await
        .unwrap();
    store
        .append(
            tills.id,
            vec![identify("m4", "u1", json!({"city": "Lyon"}))],
            Vec::new(),
        )
        .await
        .unwrap();
    // Before resolution each message counts as one person; after, people are profiles.
    let (by_source, _) = store.trait_counts().await.unwrap();
    assert!(
        by_source.contains(&("city".to_owned(), "web".to_owned(), 3)),
        "{by_source:?}"
    );
    resolve_all(&store).await;
    let (by_source, totals) = store.trait_counts().await.unwrap();
    assert!(
        by_source.contains(&("city".to_owned(), "web".to_owned(), 2)),
        "{by_source:?}"
    );
    assert!(totals.contains(&("city".to_owned(), 2)), "{totals:?}");
    assert!(
        by_source.contains(&("city".to_owned(), "tills".to_owned(), 1)),
        "{by_source:?}"
    );
    assert!(totals.contains(&("email".to_owned(), 1)), "{totals:?}");
}

async fn a_large_request_result_is_kept_compressed_and_sealed_and_read_back_whole(place: Place) {
    let store = place.open().await;
    // An archive's shape: the same field names thousands of times, varied values, any script.
    let events: Vec<serde_json::Value> = (0..5_000)
        .map(|i| json!({"seq": i, "type": "track", "event": "Order Completed", "properties": {"order_id": format!("FR-{}", i * 7919 % 100_003), "city": "Besançon", "note": "très bien 👍"}}))
        .collect();
    let text = json!({"json": {"events": events}, "html": "<p>Vos données</p>"}).to_string();
    store.put_request_result(41, text.clone()).await.unwrap();
    assert_eq!(store.request_result(41).await.unwrap(), Some(text.clone()));
    // Kept again (a request carried out twice), it replaces the first.
    store.put_request_result(41, "{}".into()).await.unwrap();
    assert_eq!(store.request_result(41).await.unwrap().as_deref(), Some("{}"));
    assert_eq!(store.request_result(42).await.unwrap(), None);
    // Written a hundred bytes at a time, as an archive is rendered, it reads back the same.
    store
        .put_request_result_written(43, |out| text.as_bytes().chunks(100).try_for_each(|c| out.write_all(c)))
        .await
        .unwrap();
    assert_eq!(store.request_result(43).await.unwrap(), Some(text.clone()));
    // A writer that fails half-way keeps nothing of its own, and is named as the cause.
    let failed = store
        .put_request_result_written(43, |out| {
            out.write_all(b"{\"json\":")?;
            Err(std::io::Error::other("the archive could not be rendered"))
        })
        .await;
    assert!(
        matches!(&failed, Err(confiance_store::StoreError::Writer(why)) if why.contains("could not be rendered")),
        "{failed:?}"
    );
    assert_eq!(store.request_result(43).await.unwrap(), Some(text));
}

async fn recipient_notices_are_claimed_once_retried_and_superseded_by_erasure(place: Place) {
    use confiance_core::secret::Secret;
    use confiance_store::{Erasure, NewRecipientNotice, NoticeEnd, NoticeStatus};
    let store = place.open().await;
    // A clock finer than the store's microseconds: what is read back is what claims compare.
    let now = at("2026-05-04T10:00:00.123456789Z");
    let minutes = |n: i64| jiff::SignedDuration::from_mins(n);
    let notice = |request: i64, profile: i64, host: &str, payload: &str, seal: bool| NewRecipientNotice {
        request_id: Some(request),
        profile_id: profile,
        notice: "rectification".into(),
        campaign: "Partenaire".into(),
        url: Secret::new(format!("https://{host}/hook?token=t")),
        payload: Secret::new(payload.to_owned()),
        seal,
    };
    let queued = store
        .queue_recipient_notices(
            vec![
                notice(7, 1, "a.example", r#"{"traits":{"first_name":"Zoé"}}"#, true),
                notice(7, 1, "b.example", r#"{"notice":"rectification"}"#, false),
                notice(8, 2, "a.example", r#"{"notice":"erasure"}"#, false),
            ],
            now,
        )
        .await
        .unwrap();
    assert_eq!(queued.len(), 3);
    assert!(
        queued
            .iter()
            .all(|n| n.status == NoticeStatus::Pending && n.attempts == 0 && n.next_at == micros(now))
    );
    assert!(
        !queued[0].payload.expose().contains("Zoé"),
        "a payload with data is kept sealed"
    );
    assert!(!format!("{:?}", queued[0]).contains("token"), "a URL never prints");
    assert_eq!(
        store.recipient_notice_payload(&queued[0]).await.unwrap().as_deref(),
        Some(r#"{"traits":{"first_name":"Zoé"}}"#)
    );
    assert_eq!(store.due_recipient_notices(now - minutes(1), 10).await.unwrap(), []);
    assert_eq!(store.due_recipient_notices(now, 10).await.unwrap(), queued);

    // One claim wins, and only once the notice is due; an end under another lease changes nothing.
    let first = &queued[0];
    let seen = first.next_at;
    assert!(
        !store
            .claim_recipient_notice(first.id, seen, seen - minutes(1), now + minutes(2))
            .await
            .unwrap(),
        "not due yet"
    );
    assert!(
        store
            .claim_recipient_notice(first.id, seen, now, now + minutes(2))
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_recipient_notice(first.id, seen, now, now + minutes(3))
            .await
            .unwrap()
    );
    let lease = micros(now + minutes(2));
    assert!(
        !store
            .claim_recipient_notice(first.id, lease, now + minutes(1), now + minutes(3))
            .await
            .unwrap(),
        "a notice being tried is not taken before its lease ends"
    );
    assert_eq!(
        store.due_recipient_notices(now + minutes(1), 10).await.unwrap().len(),
        2,
        "held"
    );
    assert!(
        !store
            .end_recipient_notice(first.id, now + minutes(3), NoticeEnd::Sent, "HTTP 200", now)
            .await
            .unwrap()
    );
    let retry_at = micros(now + minutes(5));
    assert!(
        store
            .end_recipient_notice(first.id, lease, NoticeEnd::Retry(retry_at), "refused: HTTP 503", now)
            .await
            .unwrap()
    );
    let of_7 = store.recipient_notices(Some(7), None, 10).await.unwrap();
    let kept = of_7.iter().find(|n| n.id == first.id).unwrap();
    assert_eq!(
        (kept.status, kept.attempts, kept.next_at, kept.outcome.as_deref()),
        (NoticeStatus::Pending, 1, retry_at, Some("refused: HTTP 503"))
    );
    // A lease that ran out: another worker takes the notice over, the first one's end is void.
    let second = &queued[1];
    assert!(
        store
            .claim_recipient_notice(second.id, seen, now, now + minutes(2))
            .await
            .unwrap()
    );
    let again = store.due_recipient_notices(now + minutes(2), 10).await.unwrap();
    let taken = again.iter().find(|n| n.id == second.id).unwrap();
    assert_eq!(taken.attempts, 1);
    assert!(
        store
            .claim_recipient_notice(second.id, taken.next_at, now + minutes(2), now + minutes(4))
            .await
            .unwrap()
    );
    assert!(
        !store
            .end_recipient_notice(second.id, now + minutes(2), NoticeEnd::Sent, "HTTP 200", now)
            .await
            .unwrap()
    );
    assert!(
        store
            .end_recipient_notice(second.id, now + minutes(4), NoticeEnd::Failed, "unreachable", now)
            .await
            .unwrap()
    );
    let failed = store
        .recipient_notices(None, Some(NoticeStatus::Failed), 10)
        .await
        .unwrap();
    assert_eq!(
        failed.iter().map(|n| (n.id, n.attempts)).collect::<Vec<_>>(),
        [(second.id, 2)]
    );
    assert_eq!(failed[0].done_at, Some(micros(now)));
    assert!(!failed[0].payload.expose().is_empty(), "kept to be sent again");

    // Staff queue the failed one again, attempts counted afresh.
    assert_eq!(store.retry_recipient_notices(7, now + minutes(10)).await.unwrap(), 1);
    let due = store.due_recipient_notices(now + minutes(10), 10).await.unwrap();
    assert_eq!(
        due.iter().map(|n| n.id).collect::<Vec<_>>(),
        [queued[2].id, first.id, second.id],
        "the longest waiting first"
    );
    assert_eq!(due.iter().find(|n| n.id == second.id).unwrap().attempts, 0);

    // A notice sent keeps nothing of what it carried.
    let third = &queued[2];
    assert!(
        store
            .claim_recipient_notice(third.id, third.next_at, now + minutes(10), now + minutes(12))
            .await
            .unwrap()
    );
    assert!(
        store
            .end_recipient_notice(
                third.id,
                now + minutes(12),
                NoticeEnd::Sent,
                "HTTP 200",
                now + minutes(10)
            )
            .await
            .unwrap()
    );
    let sent = &store.recipient_notices(Some(8), None, 10).await.unwrap()[0];
    assert_eq!((sent.status, sent.payload.expose().as_str()), (NoticeStatus::Sent, ""));

    // Erasing profile 1 cancels its pending notices and empties their payloads.
    store
        .erase(Erasure {
            keys: vec!["email:zoe@example.org".into()],
            profile: Some(1),
            suppression: vec![],
            at: now + minutes(11),
            notices: vec![NewRecipientNotice {
                request_id: Some(9),
                notice: "erasure".into(),
                ..notice(9, 1, "a.example", r#"{"notice":"erasure"}"#, false)
            }],
        })
        .await
        .unwrap();
    let of_9 = store.recipient_notices(Some(9), None, 10).await.unwrap();
    assert_eq!(
        of_9.iter().map(|n| (n.status, n.notice.as_str())).collect::<Vec<_>>(),
        [(NoticeStatus::Pending, "erasure")],
        "the erasure's own notice is queued with it, after the others are cancelled"
    );
    let of_7 = store.recipient_notices(Some(7), None, 10).await.unwrap();
    assert_eq!(of_7.len(), 2);
    for n in &of_7 {
        assert_eq!(
            (n.status, n.outcome.as_deref()),
            (NoticeStatus::Cancelled, Some(confiance_store::SUPERSEDED))
        );
        assert_eq!(n.payload.expose(), "");
        assert_eq!(store.recipient_notice_payload(n).await.unwrap(), None);
    }
    assert_eq!(store.due_recipient_notices(now + minutes(20), 10).await.unwrap(), of_9);
    assert_eq!(
        store.recipient_notices(Some(8), None, 10).await.unwrap()[0].status,
        NoticeStatus::Sent,
        "another person's notices are untouched"
    );
}
