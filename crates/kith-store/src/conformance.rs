//! The conformance suite every [`Store`] backend runs.
//!
//! A backend's test file invokes [`conformance_suite!`](crate::conformance_suite) with an async
//! function that returns a fresh, empty store (or `None` to skip, e.g. when no PostgreSQL is
//! configured). Each check here is one `#[tokio::test]` there.
//!
//! The checks panic on failure: they are test code.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use crate::*;

/// Generates one test per conformance check for a backend.
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!(@each $make;
            accounts_and_authentication,
            key_packages_are_claimed_once,
            messages_are_stored_once_and_acked,
            conversation_refusals,
            fetch_pages_in_order,
            sequence_numbers_are_never_reused,
            retention_sweep_deletes_old_messages,
            concurrent_sends_all_land,
            group_updates_are_ordered_by_epoch,
            devices_are_found_by_key,
            expiring_messages_go_at_their_time,
            safety_records,
            business_directory,
            budgeted_claims_take_the_last_resort,
            withheld_entries_wait_for_release,
            signals_count_once_and_clear,
            attempts_are_counted_and_forgotten,
            key_packages_are_dropped_for_renewal,
            missed_messages_are_counted_until_told,
            repeats_by_client_id_are_stored_once,
            applied_handshakes_are_kept_with_their_change,
            account_keys_are_kept,
            device_names_and_last_seen_are_kept,
            links_work_once_and_go,
            a_removed_device_is_gone_for_good,
            recovery_keys_change_only_from_the_current_one,
            a_recovery_key_a_device_set_goes_with_it,
            a_recovered_account_starts_again_with_one_device,
            the_directory_moves_one_epoch_at_a_time,
            the_directory_keeps_its_first_keys_roots_and_publisher,
        );
    };
    (@each $make:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(store) = $make().await else { return };
                $crate::conformance::$check(store).await;
            }
        )*
    };
}

const NOW: Millis = 1_700_000_000_000;

fn account(name: &str, kps: usize) -> NewAccount {
    NewAccount {
        username: name.to_string(),
        kind: AccountKind::Person,
        credential_key: format!("key-{name}").into_bytes(),
        token_hash: [name.len() as u8; 32],
        key_packages: (0..kps).map(|i| format!("kp-{name}-{i}").into_bytes()).collect(),
        last_resort: Some(format!("kp-{name}-last").into_bytes()),
        now: NOW,
        profile: None,
        account_key: None,
        recovery_key: None,
        recovery_binding: None,
    }
}

fn conv(n: u8) -> Vec<u8> {
    vec![n; 16]
}

/// Conversation 1, created by `creator` with `member`, at epoch 1.
fn new_conversation(creator: DeviceId, member: DeviceId) -> NewConversation {
    NewConversation {
        conversation: conv(1),
        creator_device: creator,
        members: vec![member],
        welcome: b"welcome".to_vec(),
        epoch: 1,
        group_state: b"state-1".to_vec(),
        now: NOW,
        poster: None,
        direct: true,
        withheld: vec![],
        applied: None,
    }
}

async fn two_in_a_conversation(store: &dyn Store) -> (DeviceId, DeviceId) {
    let a = store.create_account(account("alice", 2)).await.unwrap();
    let b = store.create_account(account("bob", 2)).await.unwrap();
    store.create_conversation(new_conversation(a, b)).await.unwrap();
    (a, b)
}

fn message(from: DeviceId, to: Vec<DeviceId>, data: &[u8], now: Millis) -> NewMessage {
    NewMessage {
        conversation: conv(1),
        sender_device: from,
        kind: EntryKind::Message,
        data: data.to_vec(),
        recipients: to,
        now,
        expires_at: None,
        withheld: vec![],
        client_id: None,
    }
}

pub async fn accounts_and_authentication(store: Arc<dyn Store>) {
    let a = store.create_account(account("alice", 1)).await.unwrap();
    let mut biz = account("shop", 1);
    biz.kind = AccountKind::Business;
    let s = store.create_account(biz).await.unwrap();
    assert_ne!(a, s);

    let auth = store.device_auth(a).await.unwrap().unwrap();
    assert_eq!(auth.username, "alice");
    assert_eq!(auth.kind, AccountKind::Person);
    assert_eq!(auth.token_hash, [5; 32]);
    assert_eq!(auth.credential_key, b"key-alice");
    assert_eq!(store.device_auth(s).await.unwrap().unwrap().kind, AccountKind::Business);
    assert_eq!(store.device_auth(a + s + 1000).await.unwrap(), None);

    // A rotated token replaces the old one; an unknown device is refused.
    store.set_token_hash(a, [6; 32]).await.unwrap();
    assert_eq!(store.device_auth(a).await.unwrap().unwrap().token_hash, [6; 32]);
    assert!(matches!(
        store.set_token_hash(a + s + 1000, [6; 32]).await,
        Err(StoreError::UnknownDevice)
    ));

    assert!(matches!(
        store.create_account(account("alice", 1)).await,
        Err(StoreError::UsernameTaken)
    ));

    let devices = store.account_devices("alice").await.unwrap().unwrap();
    assert_eq!(devices.username, "alice");
    assert_eq!(devices.devices.len(), 1);
    assert_eq!(devices.devices[0].device_id, a);
    assert_eq!(devices.devices[0].credential_key, b"key-alice");
    assert_eq!(devices.devices[0].created_at, NOW);
    assert_eq!(store.account_devices("nobody").await.unwrap(), None);

    let counts = store.counts().await.unwrap();
    assert_eq!((counts.accounts, counts.devices), (2, 2));
}

pub async fn key_packages_are_claimed_once(store: Arc<dyn Store>) {
    let b = store.create_account(account("bob", 2)).await.unwrap();
    assert_eq!(store.key_packages_remaining(b).await.unwrap(), 2);

    let first = store.claim_key_packages("bob", true, None).await.unwrap();
    let second = store.claim_key_packages("bob", true, None).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].device_id, b);
    assert!(!first[0].last_resort && !second[0].last_resort);
    assert_ne!(first[0].data, second[0].data, "a one-time KeyPackage went out twice");
    assert_eq!(store.key_packages_remaining(b).await.unwrap(), 0);

    for _ in 0..2 {
        let last = store.claim_key_packages("bob", true, None).await.unwrap();
        assert_eq!(last[0].data, b"kp-bob-last");
        assert!(last[0].last_resort);
    }

    let left = store
        .add_key_packages(b, vec![b"new-1".to_vec()], Some(b"new-last".to_vec()))
        .await
        .unwrap();
    assert_eq!(left, 1);
    assert_eq!(store.claim_key_packages("bob", true, None).await.unwrap()[0].data, b"new-1");
    assert_eq!(store.claim_key_packages("bob", true, None).await.unwrap()[0].data, b"new-last");

    assert!(matches!(
        store.claim_key_packages("nobody", true, None).await,
        Err(StoreError::UnknownUser)
    ));

    // Concurrent claims never share a one-time KeyPackage.
    store
        .add_key_packages(b, (0..20).map(|i| format!("c-{i}").into_bytes()).collect(), None)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.claim_key_packages("bob", true, None).await }));
    }
    let mut seen = std::collections::HashSet::new();
    for t in tasks {
        let claimed = t.await.unwrap().unwrap();
        assert!(!claimed[0].last_resort);
        assert!(seen.insert(claimed[0].data.clone()), "handed out twice");
    }
}

pub async fn messages_are_stored_once_and_acked(store: Arc<dyn Store>) {
    let (a, b) = two_in_a_conversation(&*store).await;
    let c = store.create_account(account("carol", 0)).await.unwrap();

    assert_eq!(store.conversation_route(&conv(1)).await.unwrap().map(|r| r.members).unwrap(), {
        let mut m = vec![a, b];
        m.sort();
        m
    });

    // The Welcome went to bob only.
    assert!(store.fetch(a, 0, 100, NOW).await.unwrap().is_empty());
    let welcome = store.fetch(b, 0, 100, NOW).await.unwrap();
    assert_eq!(welcome.len(), 1);
    assert_eq!((welcome[0].sender_kind, welcome[0].sender_verified), (AccountKind::Person, false));
    assert_eq!(welcome[0].kind, EntryKind::Welcome);
    assert_eq!(welcome[0].data, b"welcome");
    assert_eq!(welcome[0].sender, "alice");
    assert_eq!(welcome[0].sender_device, a);
    assert_eq!(welcome[0].conversation, conv(1));

    // One message to two devices is one blob and two entries.
    let before = store.counts().await.unwrap();
    let queued = store.enqueue(message(a, vec![b, c], b"ciphertext", NOW + 1)).await.unwrap();
    let id = queued.message_id;
    let after = store.counts().await.unwrap();
    assert_eq!(after.messages, before.messages + 1);
    assert_eq!(after.queue_entries, before.queue_entries + 2);

    // The Welcome and the message for bob, the message for carol, nothing for alice or for a
    // device that does not exist; in the order asked.
    assert_eq!(store.queue_depths(&[c, a, b, 999_999]).await.unwrap(), vec![1, 0, 2, 0]);
    assert!(store.queue_depths(&[]).await.unwrap().is_empty());

    let to_b = store.fetch(b, welcome[0].seq, 100, NOW).await.unwrap();
    let to_c = store.fetch(c, 0, 100, NOW).await.unwrap();
    assert_eq!(to_b.len(), 1);
    assert_eq!(to_c.len(), 1);
    assert_eq!(to_b[0].message_id, id);
    assert_eq!(to_c[0].message_id, id);
    assert_eq!(to_b[0].data, b"ciphertext");
    assert_eq!(to_b[0].created_at, NOW + 1);
    // The answer names each recipient's entry, in the order of the recipients.
    assert_eq!(queued.seqs, vec![to_b[0].seq, to_c[0].seq]);

    // A device cannot ack another device's entry.
    assert_eq!(store.ack(a, &[to_b[0].seq]).await.unwrap(), 0);
    assert_eq!(store.ack(b, &[welcome[0].seq, to_b[0].seq]).await.unwrap(), 2);
    // Acking again is harmless.
    assert_eq!(store.ack(b, &[welcome[0].seq, to_b[0].seq]).await.unwrap(), 0);
    assert!(store.fetch(b, 0, 100, NOW).await.unwrap().is_empty());
    assert_eq!(store.queue_depths(&[b, c]).await.unwrap(), vec![0, 1]);
    // The blob stays while carol's entry does...
    assert_eq!(store.counts().await.unwrap().messages, 1);
    assert_eq!(store.ack(c, &[to_c[0].seq]).await.unwrap(), 1);
    // ...and goes with it.
    let end = store.counts().await.unwrap();
    assert_eq!((end.messages, end.queue_entries), (0, 0));
}

pub async fn conversation_refusals(store: Arc<dyn Store>) {
    let (a, b) = two_in_a_conversation(&*store).await;
    let again = NewConversation {
        conversation: conv(1),
        creator_device: b,
        members: vec![a],
        welcome: vec![1],
        epoch: 1,
        group_state: vec![],
        now: NOW,
        poster: None,
        direct: false,
        withheld: vec![],
        applied: None,
    };
    assert!(matches!(store.create_conversation(again).await, Err(StoreError::ConversationExists)));
    let ghost = NewConversation {
        conversation: conv(2),
        creator_device: a,
        members: vec![a + b + 1000],
        welcome: vec![1],
        epoch: 1,
        group_state: vec![],
        now: NOW,
        poster: None,
        direct: false,
        withheld: vec![],
        applied: None,
    };
    assert!(matches!(store.create_conversation(ghost).await, Err(StoreError::UnknownDevice)));
    // The refused conversation left nothing behind.
    assert_eq!(store.conversation_route(&conv(2)).await.unwrap().map(|r| r.members), None);
    assert_eq!(store.counts().await.unwrap().messages, 1);
}

pub async fn fetch_pages_in_order(store: Arc<dyn Store>) {
    let (a, b) = two_in_a_conversation(&*store).await;
    for i in 0..25u8 {
        store.enqueue(message(a, vec![b], &[i], NOW)).await.unwrap();
    }
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = store.fetch(b, after, 10, NOW).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        for e in &page {
            assert!(e.seq > after);
            after = e.seq;
            seen.push(e.data.clone());
        }
    }
    assert_eq!(seen.len(), 26);
    assert_eq!(seen[0], b"welcome");
    for (i, data) in seen[1..].iter().enumerate() {
        assert_eq!(data, &vec![i as u8]);
    }
}

pub async fn sequence_numbers_are_never_reused(store: Arc<dyn Store>) {
    let (a, b) = two_in_a_conversation(&*store).await;
    let id1 = store.enqueue(message(a, vec![b], b"one", NOW)).await.unwrap().message_id;
    let all = store.fetch(b, 0, 10, NOW).await.unwrap();
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    store.ack(b, &seqs).await.unwrap();
    let id2 = store.enqueue(message(a, vec![b], b"two", NOW)).await.unwrap().message_id;
    let next = store.fetch(b, 0, 10, NOW).await.unwrap();
    assert!(id2 > id1);
    assert!(next[0].seq > *seqs.iter().max().unwrap());
}

pub async fn retention_sweep_deletes_old_messages(store: Arc<dyn Store>) {
    let (a, b) = two_in_a_conversation(&*store).await;
    store.enqueue(message(a, vec![b], b"old", NOW + 10)).await.unwrap();
    store.enqueue(message(a, vec![b], b"new", NOW + 1000)).await.unwrap();
    // The Welcome (NOW) and "old" are older than the cutoff.
    assert_eq!(store.sweep_expired(NOW + 500, NOW).await.unwrap(), 2);
    let left = store.fetch(b, 0, 10, NOW).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].data, b"new");
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.messages, counts.queue_entries), (1, 1));
    assert_eq!(store.sweep_expired(NOW + 500, NOW).await.unwrap(), 0);
}

pub async fn concurrent_sends_all_land(store: Arc<dyn Store>) {
    let (a, b) = two_in_a_conversation(&*store).await;
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.enqueue(message(a, vec![b], &i.to_be_bytes(), NOW)).await
        }));
    }
    // Each answer names the entry that was queued: seq → message id, as the queue has it.
    let mut answered = std::collections::HashMap::new();
    for t in tasks {
        let queued = t.await.unwrap().unwrap();
        assert_eq!(queued.seqs.len(), 1);
        assert!(answered.insert(queued.seqs[0], queued.message_id).is_none());
    }
    let mut got = 0;
    let mut after = 0;
    loop {
        let page = store.fetch(b, after, 64, NOW).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        got += page.len();
        for e in page.iter().filter(|e| e.kind == EntryKind::Message) {
            assert_eq!(answered.remove(&e.seq), Some(e.message_id));
        }
    }
    assert_eq!(got, 201);
    assert!(answered.is_empty());
}

pub async fn group_updates_are_ordered_by_epoch(store: Arc<dyn Store>) {
    let (a, b) = two_in_a_conversation(&*store).await;
    let c = store.create_account(account("carol", 0)).await.unwrap();
    assert_eq!(
        store.group_state(&conv(1)).await.unwrap(),
        Some(GroupState { epoch: 1, state: b"state-1".to_vec(), revision: 0 })
    );
    assert_eq!(store.group_state(&conv(9)).await.unwrap(), None);

    let update = |expected: u64, members: Vec<DeviceId>| GroupUpdate {
        conversation: conv(1),
        expected_epoch: expected,
        expected_revision: expected - 1,
        epoch: expected + 1,
        state: format!("state-{}", expected + 1).into_bytes(),
        members,
        messages: vec![
            message(a, vec![b], b"commit", NOW),
            NewMessage { kind: EntryKind::Welcome, ..message(a, vec![c], b"welcome-c", NOW) },
        ],
        applied: None,
    };
    let ids = store.update_group(update(1, vec![a, b, c])).await.unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(store.group_state(&conv(1)).await.unwrap().unwrap().epoch, 2);
    assert_eq!(store.conversation_route(&conv(1)).await.unwrap().unwrap().epoch, 2);
    assert_eq!(store.conversation_route(&conv(1)).await.unwrap().map(|r| r.members).unwrap(), {
        let mut m = vec![a, b, c];
        m.sort();
        m
    });
    let to_c = store.fetch(c, 0, 10, NOW).await.unwrap();
    assert_eq!(to_c.len(), 1);
    assert_eq!(to_c[0].kind, EntryKind::Welcome);

    // A second change for epoch 1 is stale and leaves nothing behind.
    let before = store.counts().await.unwrap();
    assert!(matches!(store.update_group(update(1, vec![a])).await, Err(StoreError::StaleEpoch)));
    assert_eq!(store.counts().await.unwrap(), before);
    assert_eq!(
        store.conversation_route(&conv(1)).await.unwrap().map(|r| r.members).unwrap().len(),
        3
    );

    // Removing a member takes it off the fan-out list.
    store.update_group(update(2, vec![a, c])).await.unwrap();
    let mut members = store.conversation_route(&conv(1)).await.unwrap().map(|r| r.members).unwrap();
    members.sort();
    let mut expected = vec![a, c];
    expected.sort();
    assert_eq!(members, expected);

    let mut unknown = update(2, vec![a]);
    unknown.conversation = conv(9);
    assert!(matches!(store.update_group(unknown).await, Err(StoreError::UnknownConversation)));

    // Concurrent updates for one epoch: exactly one wins.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let u = update(3, vec![a, b, c]);
        tasks.push(tokio::spawn(async move { store.update_group(u).await }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::StaleEpoch) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1);

    // A change that keeps the epoch (a proposal to leave) still moves the revision on: an
    // update validated against the copy before it is refused, whichever node makes it.
    let stored = store.group_state(&conv(1)).await.unwrap().unwrap();
    assert_eq!((stored.epoch, stored.revision), (4, 3));
    let proposal = GroupUpdate {
        expected_epoch: 4,
        expected_revision: 3,
        epoch: 4,
        state: b"state-4-with-proposal".to_vec(),
        messages: vec![message(b, vec![a], b"proposal", NOW)],
        ..update(4, vec![a, c])
    };
    store.update_group(proposal).await.unwrap();
    let raced = GroupUpdate { expected_revision: 3, ..update(4, vec![a, b, c]) };
    assert!(matches!(store.update_group(raced).await, Err(StoreError::StaleEpoch)));
    let stored = store.group_state(&conv(1)).await.unwrap().unwrap();
    assert_eq!(stored.state, b"state-4-with-proposal");
    assert_eq!(stored.revision, 4);
}

pub async fn devices_are_found_by_key(store: Arc<dyn Store>) {
    let a = store.create_account(account("alice", 0)).await.unwrap();
    let b = store.create_account(account("bob", 0)).await.unwrap();
    let mut found = store
        .devices_by_credential_keys(&[
            b"key-bob".to_vec(),
            b"key-nobody".to_vec(),
            b"key-alice".to_vec(),
        ])
        .await
        .unwrap();
    found.sort_by_key(|k| k.device_id);
    assert_eq!(found.len(), 2);
    assert_eq!((found[0].device_id, found[0].username.as_str()), (a, "alice"));
    assert_eq!((found[1].device_id, found[1].username.as_str()), (b, "bob"));
    assert_eq!(found[1].credential_key, b"key-bob");
    assert!(store.devices_by_credential_keys(&[]).await.unwrap().is_empty());
}

pub async fn expiring_messages_go_at_their_time(store: Arc<dyn Store>) {
    let a = store.create_account(account("alice", 0)).await.unwrap();
    let b = store.create_account(account("bob", 0)).await.unwrap();
    store
        .create_conversation(NewConversation {
            conversation: conv(3),
            creator_device: a,
            members: vec![b],
            welcome: b"welcome".to_vec(),
            epoch: 1,
            group_state: vec![],
            now: NOW,
            poster: Some("alice".into()),
            direct: false,
            withheld: vec![],
            applied: None,
        })
        .await
        .unwrap();
    let route = store.conversation_route(&conv(3)).await.unwrap().unwrap();
    assert_eq!(route.poster.as_deref(), Some("alice"));
    assert!(!route.direct);
    assert!(store.conversation_route(&conv(1)).await.unwrap().is_none());
    let story = NewMessage {
        conversation: conv(3),
        expires_at: Some(NOW + 100),
        ..message(a, vec![b], b"story", NOW)
    };
    store.enqueue(story).await.unwrap();
    let seen = store.fetch(b, 0, 10, NOW + 99).await.unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].expires_at, Some(NOW + 100));
    assert_eq!(seen[0].expires_at, None);
    // At its expiry it is no longer handed out, and the sweep deletes it (not the Welcome).
    assert_eq!(store.fetch(b, 0, 10, NOW + 100).await.unwrap().len(), 1);
    assert_eq!(store.sweep_expired(0, NOW + 100).await.unwrap(), 1);
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.messages, counts.queue_entries), (1, 1));
    store.compact().await.unwrap();
}

pub async fn safety_records(store: Arc<dyn Store>) {
    let (a, b) = two_in_a_conversation(&*store).await;
    assert!(store.conversation_route(&conv(1)).await.unwrap().unwrap().direct);

    // Franking keys: a new key retires the one in use.
    assert!(store.franking_keys().await.unwrap().is_empty());
    let k1 = store.add_franking_key(vec![1; 32], NOW).await.unwrap();
    let k2 = store.add_franking_key(vec![2; 32], NOW + 5).await.unwrap();
    let keys = store.franking_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!((keys[0].id, keys[0].retired_at), (k1, Some(NOW + 5)));
    assert_eq!(
        (keys[1].id, keys[1].retired_at, keys[1].key.expose().to_vec()),
        (k2, None, vec![2; 32])
    );

    // Blocks.
    store.block("bob", "alice", NOW).await.unwrap();
    store.block("bob", "alice", NOW).await.unwrap();
    assert!(matches!(store.block("bob", "nobody", NOW).await, Err(StoreError::UnknownUser)));
    assert_eq!(store.blocked_by("bob").await.unwrap(), ["alice"]);
    assert_eq!(store.devices_blocking("alice").await.unwrap(), [b]);
    assert!(store.devices_blocking("bob").await.unwrap().is_empty());

    // Reports: one per reporter and message.
    let report = NewReport {
        reporter: "bob".into(),
        sender: "alice".into(),
        sender_device: a,
        conversation: conv(1),
        message_time: NOW,
        text: "the reported text".into(),
        reason: Some("spam".into()),
        tag: vec![7; 32],
        now: NOW + 1,
    };
    let (id, new) = store.add_report(report.clone()).await.unwrap();
    assert!(new);
    assert_eq!(store.add_report(report.clone()).await.unwrap(), (id, false));
    let all = store.reports().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].sender.as_str(), all[0].text.as_str(), all[0].reason.as_deref()),
        ("alice", "the reported text", Some("spam"))
    );

    let info = store.account_info("alice").await.unwrap().unwrap();
    assert_eq!((info.blocked_by, info.reported_by, info.suspended.clone()), (1, 1, None));
    assert_eq!(info.created_at, NOW);
    assert!(store.account_info("nobody").await.unwrap().is_none());

    // Suspension shows in authentication.
    store.set_suspended("alice", Some("spam to strangers".into())).await.unwrap();
    assert_eq!(
        store.device_auth(a).await.unwrap().unwrap().suspended.as_deref(),
        Some("spam to strangers")
    );
    store.set_suspended("alice", None).await.unwrap();
    assert_eq!(store.device_auth(a).await.unwrap().unwrap().suspended, None);
    assert!(matches!(store.set_suspended("nobody", None).await, Err(StoreError::UnknownUser)));

    store
        .add_flag(FlagRecord {
            username: "alice".into(),
            action: "suspend".into(),
            reason: "why".into(),
            created_at: NOW,
        })
        .await
        .unwrap();
    assert_eq!(store.flags().await.unwrap()[0].action, "suspend");

    assert!(store.unblock("bob", "alice").await.unwrap());
    assert!(!store.unblock("bob", "alice").await.unwrap());
    assert!(store.devices_blocking("alice").await.unwrap().is_empty());
}

pub async fn business_directory(store: Arc<dyn Store>) {
    let (a, b) = two_in_a_conversation(&*store).await;
    let _ = (a, b);
    let shop = |name: &str, display: &str, about: &str| NewAccount {
        kind: AccountKind::Business,
        profile: Some((display.to_string(), about.to_string())),
        ..account(name, 1)
    };
    let bakery =
        store.create_account(shop("bakery", "The Corner Bakery", "Bread daily")).await.unwrap();
    store.create_account(shop("bikes", "Bike Repair", "Fixes flats")).await.unwrap();
    store.set_verified("bikes", true).await.unwrap();
    // People cannot be verified, and unknown names are refused.
    assert!(matches!(store.set_verified("alice", true).await, Err(StoreError::UnknownUser)));
    assert!(matches!(store.set_verified("nobody", true).await, Err(StoreError::UnknownUser)));

    let found = store.search_businesses("BREAD", 10).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].username, "bakery");
    assert_eq!(found[0].display_name.as_deref(), Some("The Corner Bakery"));
    assert!(!found[0].verified);
    let all = store.search_businesses("b", 10).await.unwrap();
    let names: Vec<&str> = all.iter().map(|a| a.username.as_str()).collect();
    assert_eq!(names, ["bikes", "bakery"], "verified first");
    assert!(
        store.search_businesses("alice", 10).await.unwrap().is_empty(),
        "people are not listed"
    );
    assert_eq!(store.search_businesses("b", 1).await.unwrap().len(), 1);
    let among = store
        .businesses_among(&["alice".into(), "bikes".into(), "nobody".into(), "bakery".into()])
        .await
        .unwrap();
    assert_eq!(among, ["bakery", "bikes"]);
    assert!(store.businesses_among(&[]).await.unwrap().is_empty());
    assert!(store.businesses_among(&["alice".into()]).await.unwrap().is_empty());

    // Alice and bob share a 1:1 conversation; alice and the bakery do not.
    assert!(store.share_direct_conversation("alice", "bob").await.unwrap());
    assert!(store.share_direct_conversation("bob", "alice").await.unwrap());
    assert!(!store.share_direct_conversation("alice", "bakery").await.unwrap());

    // A verified business's messages say so, and so does its devices' record.
    assert!(!store.device_auth(bakery).await.unwrap().unwrap().verified);
    store.set_verified("bakery", true).await.unwrap();
    assert!(store.device_auth(bakery).await.unwrap().unwrap().verified);
    assert!(!store.device_auth(a).await.unwrap().unwrap().verified);
    store
        .create_conversation(NewConversation {
            conversation: conv(5),
            creator_device: a,
            members: vec![bakery],
            welcome: b"welcome".to_vec(),
            epoch: 1,
            group_state: vec![],
            now: NOW,
            poster: None,
            direct: true,
            withheld: vec![],
            applied: None,
        })
        .await
        .unwrap();
    store
        .enqueue(NewMessage { conversation: conv(5), ..message(bakery, vec![a], b"open 9-5", NOW) })
        .await
        .unwrap();
    let got = store.fetch(a, 0, 10, NOW).await.unwrap();
    let from_shop = got.iter().find(|e| e.sender == "bakery").unwrap();
    assert_eq!((from_shop.sender_kind, from_shop.sender_verified), (AccountKind::Business, true));
    assert!(store.share_direct_conversation("alice", "bakery").await.unwrap());
    let info = store.account_info("bakery").await.unwrap().unwrap();
    assert_eq!((info.kind, info.verified), (AccountKind::Business, true));
    assert_eq!(info.description.as_deref(), Some("Bread daily"));
}

pub async fn budgeted_claims_take_the_last_resort(store: Arc<dyn Store>) {
    let b = store.create_account(account("bob", 2)).await.unwrap();
    for _ in 0..3 {
        let claimed = store.claim_key_packages("bob", false, None).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(claimed[0].last_resort);
        assert_eq!(claimed[0].data, b"kp-bob-last");
    }
    // The one-time ones are all still there.
    assert_eq!(store.key_packages_remaining(b).await.unwrap(), 2);
}

pub async fn withheld_entries_wait_for_release(store: Arc<dyn Store>) {
    let a = store.create_account(account("alice", 0)).await.unwrap();
    let b = store.create_account(account("bob", 0)).await.unwrap();
    let c = store.create_account(account("carol", 0)).await.unwrap();
    store
        .create_conversation(NewConversation {
            conversation: conv(6),
            creator_device: a,
            members: vec![b, c],
            welcome: b"welcome".to_vec(),
            epoch: 1,
            group_state: vec![],
            now: NOW,
            poster: None,
            direct: false,
            withheld: vec![c],
            applied: None,
        })
        .await
        .unwrap();
    assert_eq!(store.fetch(b, 0, 10, NOW).await.unwrap().len(), 1);
    assert!(store.fetch(c, 0, 10, NOW).await.unwrap().is_empty());
    // Still a member of the group as its tree says.
    let route = store.conversation_route(&conv(6)).await.unwrap().unwrap();
    assert!(route.members.contains(&c));
    // b acknowledges: the Welcome stays, for carol.
    let seqs: Vec<u64> = store.fetch(b, 0, 10, NOW).await.unwrap().iter().map(|e| e.seq).collect();
    store.ack(b, &seqs).await.unwrap();
    assert_eq!(store.counts().await.unwrap().messages, 1);
    // Releasing someone else's withheld entries changes nothing; carol's own, once.
    assert!(store.release_withheld("carol", "bob").await.unwrap().is_empty());
    assert!(store.release_withheld("bob", "alice").await.unwrap().is_empty());
    assert_eq!(store.release_withheld("carol", "alice").await.unwrap(), [c]);
    assert!(store.release_withheld("carol", "alice").await.unwrap().is_empty());
    let got = store.fetch(c, 0, 10, NOW).await.unwrap();
    assert_eq!(
        (got.len(), got[0].kind, got[0].data.as_slice()),
        (1, EntryKind::Welcome, &b"welcome"[..])
    );
    store.ack(c, &[got[0].seq]).await.unwrap();
    assert_eq!(store.counts().await.unwrap().messages, 0);
    // Withheld entries of a group change (a Welcome in a commit) too.
    let welcome = NewMessage {
        conversation: conv(6),
        kind: EntryKind::Welcome,
        withheld: vec![c],
        ..message(a, vec![b], b"welcome-2", NOW)
    };
    store.enqueue(welcome.clone()).await.unwrap();
    assert!(store.fetch(c, 0, 10, NOW).await.unwrap().is_empty());
    // Withheld entries do not fill the queue (a blocked account cannot crowd others out)...
    assert_eq!(store.queue_depths(&[c]).await.unwrap(), [0]);
    assert_eq!(store.release_withheld("carol", "alice").await.unwrap(), [c]);
    assert_eq!(store.fetch(c, 0, 10, NOW).await.unwrap().len(), 1);
    // ...nor pile up: at most MAX_WITHHELD from one sending device.
    for _ in 0..MAX_WITHHELD + 5 {
        store.enqueue(welcome.clone()).await.unwrap();
    }
    store.release_withheld("carol", "alice").await.unwrap();
    let released = store.fetch(c, 0, 100, NOW).await.unwrap().len() as u64;
    assert_eq!(released, 1 + MAX_WITHHELD);
}

pub async fn signals_count_once_and_clear(store: Arc<dyn Store>) {
    let a = store.create_account(account("alice", 0)).await.unwrap();
    let b = store.create_account(account("bob", 0)).await.unwrap();
    store.create_account(account("carol", 0)).await.unwrap();
    let signal = |source: &str, kind, qualified| SignalRecord {
        target: "bob".into(),
        source: source.into(),
        kind,
        qualified,
        created_at: NOW,
    };
    assert_eq!(store.add_signal(signal("alice", SignalKind::Block, true)).await.unwrap(), Some(1));
    // A repeat changes nothing.
    assert_eq!(store.add_signal(signal("alice", SignalKind::Block, true)).await.unwrap(), None);
    // Unqualified ones are kept but not counted; kinds count apart.
    assert_eq!(store.add_signal(signal("carol", SignalKind::Block, false)).await.unwrap(), Some(1));
    assert_eq!(store.add_signal(signal("alice", SignalKind::Report, true)).await.unwrap(), Some(1));
    let all = store.signals(Some("bob")).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.iter().any(|s| s.source == "carol" && !s.qualified));
    assert!(store.signals(Some("alice")).await.unwrap().is_empty());
    assert_eq!(store.signals(None).await.unwrap().len(), 3);
    // A lifted block is taken back; the report stays.
    assert!(store.withdraw_signal("bob", "carol", SignalKind::Block).await.unwrap());
    assert!(!store.withdraw_signal("bob", "carol", SignalKind::Block).await.unwrap());
    assert_eq!(store.signals(Some("bob")).await.unwrap().len(), 2);
    assert_eq!(store.add_signal(signal("carol", SignalKind::Block, false)).await.unwrap(), Some(1));
    assert_eq!(store.clear_signals("bob").await.unwrap(), 3);
    assert!(store.signals(None).await.unwrap().is_empty());
    assert_eq!(store.add_signal(signal("alice", SignalKind::Block, true)).await.unwrap(), Some(1));

    // Who wrote to whom: bob posts in a conversation alice is in.
    store
        .create_conversation(NewConversation {
            conversation: conv(7),
            creator_device: a,
            members: vec![b],
            welcome: b"welcome".to_vec(),
            epoch: 1,
            group_state: vec![],
            now: NOW,
            poster: None,
            direct: true,
            withheld: vec![],
            applied: None,
        })
        .await
        .unwrap();
    assert!(!store.has_written_to("bob", "alice").await.unwrap());
    store.note_spoke(&conv(7), "bob").await.unwrap();
    store.note_spoke(&conv(7), "bob").await.unwrap();
    assert!(store.has_written_to("bob", "alice").await.unwrap());
    assert!(!store.has_written_to("alice", "bob").await.unwrap());
    assert!(!store.has_written_to("bob", "carol").await.unwrap());
    // Posting in a group does not count: its admin could add anyone after the fact.
    let c = store.account_devices("carol").await.unwrap().unwrap().devices[0].device_id;
    store
        .create_conversation(NewConversation {
            conversation: conv(8),
            creator_device: b,
            members: vec![c],
            welcome: b"welcome".to_vec(),
            epoch: 1,
            group_state: vec![],
            now: NOW,
            poster: None,
            direct: false,
            withheld: vec![],
            applied: None,
        })
        .await
        .unwrap();
    store.note_spoke(&conv(8), "bob").await.unwrap();
    assert!(!store.has_written_to("bob", "carol").await.unwrap());
}

pub async fn attempts_are_counted_and_forgotten(store: Arc<dyn Store>) {
    let hour = 3_600_000;
    for n in 1..=3 {
        assert_eq!(store.count_attempt("10.0.0.1", NOW - hour, NOW + n).await.unwrap(), n);
    }
    // Another source counts apart.
    assert_eq!(store.count_attempt("10.0.0.2", NOW - hour, NOW + 5).await.unwrap(), 1);
    // An hour on, the old ones are forgotten.
    let later = NOW + hour + 10;
    assert_eq!(store.count_attempt("10.0.0.1", later - hour, later).await.unwrap(), 1);
    assert_eq!(store.count_attempt("10.0.0.2", later - hour, later).await.unwrap(), 1);
}

pub async fn key_packages_are_dropped_for_renewal(store: Arc<dyn Store>) {
    let alice = store.create_account(account("alice", 3)).await.unwrap();
    let bob = store.create_account(account("bob", 2)).await.unwrap();
    assert_eq!(store.drop_key_packages(alice).await.unwrap(), 3);
    assert_eq!(store.key_packages_remaining(alice).await.unwrap(), 0);
    // Others' stay, and alice's last-resort one is still handed out.
    assert_eq!(store.key_packages_remaining(bob).await.unwrap(), 2);
    let claimed = store.claim_key_packages("alice", true, None).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(claimed[0].last_resort);
    assert_eq!(store.add_key_packages(alice, vec![b"fresh".to_vec()], None).await.unwrap(), 1);
}

pub async fn missed_messages_are_counted_until_told(store: Arc<dyn Store>) {
    let (a, b) = (7, 8);
    assert!(store.missed(a, 100).await.unwrap().is_empty());
    store.note_missed(&[a, b], &conv(1)).await.unwrap();
    store.note_missed(&[a], &conv(1)).await.unwrap();
    store.note_missed(&[a], &conv(2)).await.unwrap();
    store.note_missed(&[], &conv(3)).await.unwrap();
    assert_eq!(store.missed(a, 100).await.unwrap(), vec![(conv(1), 2), (conv(2), 1)]);
    assert_eq!(store.missed(b, 100).await.unwrap(), vec![(conv(1), 1)]);
    assert_eq!(store.missed(a, 1).await.unwrap(), vec![(conv(1), 2)]);
    // Told of what it saw; one more missed meanwhile stays to be told.
    store.note_missed(&[a], &conv(1)).await.unwrap();
    store.forget_missed(a, &[(conv(1), 2), (conv(2), 1)]).await.unwrap();
    assert_eq!(store.missed(a, 100).await.unwrap(), vec![(conv(1), 1)]);
    store.forget_missed(a, &[(conv(1), 1), (conv(9), 4)]).await.unwrap();
    assert!(store.missed(a, 100).await.unwrap().is_empty());
    assert_eq!(store.missed(b, 100).await.unwrap(), vec![(conv(1), 1)]);
}

pub async fn repeats_by_client_id_are_stored_once(store: Arc<dyn Store>) {
    let (a, b) = two_in_a_conversation(&*store).await;
    let keyed = |id: u8, data: &[u8], now: Millis| NewMessage {
        client_id: Some(vec![id; 16]),
        ..message(a, vec![b], data, now)
    };
    let first = store.enqueue(keyed(1, b"hello", NOW + 10)).await.unwrap();
    assert_eq!((first.seqs.len(), first.repeat_of), (1, None));
    assert_eq!(store.sent_before(a, &[1; 16]).await.unwrap(), Some((first.message_id, NOW + 10)));
    // The same id again — other bytes, later — is answered with the first, and stores nothing.
    let again = store.enqueue(keyed(1, b"hello, encrypted again", NOW + 20)).await.unwrap();
    assert_eq!((again.message_id, again.repeat_of), (first.message_id, Some(NOW + 10)));
    assert!(again.seqs.is_empty());
    // Another id, or the same id from another device, is a message of its own.
    let other = store.enqueue(keyed(2, b"second", NOW + 30)).await.unwrap();
    assert_eq!(other.repeat_of, None);
    assert_eq!(store.sent_before(b, &[1; 16]).await.unwrap(), None);
    let theirs =
        NewMessage { client_id: Some(vec![1; 16]), ..message(b, vec![a], b"theirs", NOW + 40) };
    assert_eq!(store.enqueue(theirs).await.unwrap().repeat_of, None);
    let got: Vec<Vec<u8>> = store
        .fetch(b, 0, 10, NOW)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EntryKind::Message)
        .map(|e| e.data)
        .collect();
    assert_eq!(got, vec![b"hello".to_vec(), b"second".to_vec()]);
    // Repeats at once, from many tasks: one lands.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = store.clone();
        let m = keyed(3, b"raced", NOW + 50);
        tasks.push(tokio::spawn(async move { store.enqueue(m).await.unwrap() }));
    }
    let mut firsts = 0;
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        let e = t.await.unwrap();
        firsts += usize::from(e.repeat_of.is_none());
        ids.insert(e.message_id);
    }
    assert_eq!((firsts, ids.len()), (1, 1));
    // Remembered for the retention period, then forgotten with the messages.
    store.sweep_expired(NOW + 100, NOW).await.unwrap();
    assert_eq!(store.sent_before(a, &[1; 16]).await.unwrap(), None);
    assert_eq!(store.enqueue(keyed(1, b"much later", NOW + 200)).await.unwrap().repeat_of, None);
}

pub async fn applied_handshakes_are_kept_with_their_change(store: Arc<dyn Store>) {
    let a = store.create_account(account("alice", 2)).await.unwrap();
    let b = store.create_account(account("bob", 2)).await.unwrap();
    let applied = |device, digest: u8, epoch| AppliedHandshake {
        device,
        digest: vec![digest; 32],
        epoch,
        members: 2,
    };
    // The creation is remembered for its creator, with the conversation.
    let created = NewConversation { applied: Some(applied(a, 1, 1)), ..new_conversation(a, b) };
    store.create_conversation(created).await.unwrap();
    assert_eq!(store.applied_handshake(&conv(1), a).await.unwrap(), Some(applied(a, 1, 1)));
    assert_eq!(store.applied_handshake(&conv(1), b).await.unwrap(), None);
    assert_eq!(store.applied_handshake(&conv(2), a).await.unwrap(), None);
    let update = |expected: u64, by: DeviceId, digest: u8| GroupUpdate {
        conversation: conv(1),
        expected_epoch: expected,
        expected_revision: expected - 1,
        epoch: expected + 1,
        state: format!("state-{}", expected + 1).into_bytes(),
        members: vec![a, b],
        messages: vec![message(by, vec![a, b], b"commit", NOW)],
        applied: Some(applied(by, digest, expected + 1)),
    };
    // Each device's last is kept, beside the others'; a device's next replaces its last.
    store.update_group(update(1, b, 2)).await.unwrap();
    store.update_group(update(2, a, 3)).await.unwrap();
    assert_eq!(store.applied_handshake(&conv(1), a).await.unwrap(), Some(applied(a, 3, 3)));
    assert_eq!(store.applied_handshake(&conv(1), b).await.unwrap(), Some(applied(b, 2, 2)));
    // A stale change is not applied, and not remembered either.
    assert!(matches!(store.update_group(update(1, b, 9)).await, Err(StoreError::StaleEpoch)));
    assert_eq!(store.applied_handshake(&conv(1), b).await.unwrap(), Some(applied(b, 2, 2)));
}

pub async fn account_keys_are_kept(store: Arc<dyn Store>) {
    let with = NewAccount { account_key: Some(vec![7; 32]), ..account("alice", 1) };
    store.create_account(with).await.unwrap();
    store.create_account(account("bob", 1)).await.unwrap();
    let key = |name: &'static str| {
        let store = store.clone();
        async move { store.account_devices(name).await.unwrap().unwrap().account_key }
    };
    assert_eq!(key("alice").await, Some(vec![7; 32]));
    assert_eq!(key("bob").await, None);
    // An account from before account keys gets one, once; the same again is no change.
    assert!(store.set_account_key("bob", vec![8; 32]).await.unwrap());
    assert!(store.set_account_key("bob", vec![8; 32]).await.unwrap());
    assert!(!store.set_account_key("bob", vec![9; 32]).await.unwrap());
    assert!(!store.set_account_key("alice", vec![8; 32]).await.unwrap());
    assert_eq!(key("bob").await, Some(vec![8; 32]));
    assert_eq!(key("alice").await, Some(vec![7; 32]));
    assert!(matches!(
        store.set_account_key("nobody", vec![8; 32]).await,
        Err(StoreError::UnknownUser)
    ));
}

pub async fn device_names_and_last_seen_are_kept(store: Arc<dyn Store>) {
    let a = store.create_account(account("alice", 1)).await.unwrap();
    let device = |store: Arc<dyn Store>| async move {
        store.account_devices("alice").await.unwrap().unwrap().devices.remove(0)
    };
    let d = device(store.clone()).await;
    assert_eq!((d.name, d.last_seen), (None, None));
    store.set_device_name(a, Some("laptop".into())).await.unwrap();
    store.note_seen(a, NOW + 10).await.unwrap();
    // A late note from another node never moves it back.
    store.note_seen(a, NOW + 5).await.unwrap();
    let d = device(store.clone()).await;
    assert_eq!((d.name.as_deref(), d.last_seen), (Some("laptop"), Some(NOW + 10)));
    store.set_device_name(a, None).await.unwrap();
    assert_eq!(device(store.clone()).await.name, None);
    assert!(matches!(store.set_device_name(9999, None).await, Err(StoreError::UnknownDevice)));
}

pub async fn links_work_once_and_go(store: Arc<dyn Store>) {
    let a = store.create_account(account("alice", 1)).await.unwrap();
    let link = |id: &str, expires_at| NewLink {
        id: id.into(),
        username: "alice".into(),
        device_id: a,
        pake: b"offer".to_vec(),
        created_at: NOW,
        expires_at,
    };
    let device = |key: &str, max_devices| LinkedDevice {
        credential_key: key.as_bytes().to_vec(),
        token_hash: [5; 32],
        handover: b"sealed".to_vec(),
        max_devices,
        now: NOW + 1,
        keep_until: NOW + 600_000,
    };
    store.create_link(link("L1", NOW + 600_000)).await.unwrap();
    assert!(matches!(
        store.create_link(link("L1", NOW + 600_000)).await,
        Err(StoreError::LinkExists)
    ));
    let read = store.link("L1").await.unwrap().unwrap();
    assert_eq!((read.device_id, read.pake.as_slice(), read.joined), (a, &b"offer"[..], None));
    assert_eq!(store.link("nope").await.unwrap(), None);
    // Not joined yet: nothing to approve.
    assert_eq!(store.approve_link("L1", device("new", 5)).await.unwrap(), LinkApproval::NotJoined);
    // Joined once; a second join is refused, as is a join past the expiry.
    assert!(store.join_link("L1", b"b".to_vec(), b"req".to_vec(), NOW + 1).await.unwrap());
    assert!(!store.join_link("L1", b"c".to_vec(), b"other".to_vec(), NOW + 2).await.unwrap());
    store.create_link(link("L2", NOW + 10)).await.unwrap();
    assert!(!store.join_link("L2", b"b".to_vec(), b"req".to_vec(), NOW + 10).await.unwrap());
    let read = store.link("L1").await.unwrap().unwrap();
    assert_eq!(read.joined, Some((b"b".to_vec(), b"req".to_vec())));
    // Within the device limit, with a key of its own: approved once, the device made.
    assert_eq!(
        store.approve_link("L1", device("new", 1)).await.unwrap(),
        LinkApproval::TooManyDevices
    );
    assert_eq!(
        store.approve_link("L1", device("key-alice", 5)).await.unwrap(),
        LinkApproval::KeyTaken
    );
    let LinkApproval::Approved(new) = store.approve_link("L1", device("new", 2)).await.unwrap()
    else {
        panic!("not approved")
    };
    assert_eq!(store.approve_link("L1", device("other", 5)).await.unwrap(), LinkApproval::Gone);
    let devices = store.account_devices("alice").await.unwrap().unwrap().devices;
    assert_eq!(devices.iter().map(|d| d.device_id).collect::<Vec<_>>(), [a, new]);
    let auth = store.device_auth(new).await.unwrap().unwrap();
    assert_eq!((auth.username.as_str(), auth.token_hash), ("alice", [5; 32]));
    let read = store.link("L1").await.unwrap().unwrap();
    assert_eq!(read.approved, Some((new, Some(b"sealed".to_vec()))));
    // The new device's answer replaces the handover, once.
    assert!(store.answer_link("L1", b"kps".to_vec()).await.unwrap());
    assert!(!store.answer_link("L1", b"again".to_vec()).await.unwrap());
    let read = store.link("L1").await.unwrap().unwrap();
    assert_eq!((read.approved, read.key_packages), (Some((new, None)), Some(b"kps".to_vec())));
    // The history, in chunks, while the link lasts; gone with it.
    assert!(store.put_link_chunk("L1", 0, 2, b"c0".to_vec(), NOW + 2).await.unwrap());
    assert!(store.put_link_chunk("L1", 1, 2, b"c1".to_vec(), NOW + 2).await.unwrap());
    assert!(!store.put_link_chunk("L1", 0, 2, b"late".to_vec(), NOW + 600_000).await.unwrap());
    assert!(!store.put_link_chunk("nope", 0, 1, b"x".to_vec(), NOW).await.unwrap());
    assert_eq!(store.link_chunk("L1", 1).await.unwrap(), Some((2, b"c1".to_vec())));
    assert_eq!(store.link_chunk("L1", 2).await.unwrap(), None);
    store.delete_link("L1").await.unwrap();
    assert_eq!(store.link("L1").await.unwrap(), None);
    assert_eq!(store.link_chunk("L1", 0).await.unwrap(), None);
    // An expired link goes with the retention sweep.
    store.sweep_expired(0, NOW + 10).await.unwrap();
    assert_eq!(store.link("L2").await.unwrap(), None);
}

pub async fn a_removed_device_is_gone_for_good(store: Arc<dyn Store>) {
    let a = store.create_account(account("alice", 2)).await.unwrap();
    // Her second device, through a link.
    store
        .create_link(NewLink {
            id: "L".into(),
            username: "alice".into(),
            device_id: a,
            pake: vec![1],
            created_at: NOW,
            expires_at: NOW + 600_000,
        })
        .await
        .unwrap();
    assert!(store.join_link("L", vec![2], vec![3], NOW).await.unwrap());
    let linked = LinkedDevice {
        credential_key: b"key-laptop".to_vec(),
        token_hash: [4; 32],
        handover: vec![5],
        max_devices: 5,
        now: NOW,
        keep_until: NOW + 600_000,
    };
    let LinkApproval::Approved(laptop) = store.approve_link("L", linked).await.unwrap() else {
        panic!("not approved")
    };
    store
        .add_key_packages(laptop, vec![b"kp-laptop".to_vec()], Some(b"last".to_vec()))
        .await
        .unwrap();
    store.create_conversation(new_conversation(a, laptop)).await.unwrap();

    assert!(store.put_link_chunk("L", 0, 1, b"history".to_vec(), NOW).await.unwrap());
    store.remove_device(laptop, NOW + 1).await.unwrap();
    assert!(matches!(store.remove_device(laptop, NOW + 2).await, Err(StoreError::UnknownDevice)));
    // The link that made it, and the history waiting there, went with it.
    assert_eq!(store.link("L").await.unwrap(), None);
    assert_eq!(store.link_chunk("L", 0).await.unwrap(), None);
    // Its token has no record any more; it is in no list, claim or route.
    assert_eq!(store.device_auth(laptop).await.unwrap(), None);
    let devices = store.account_devices("alice").await.unwrap().unwrap().devices;
    assert_eq!(devices.iter().map(|d| d.device_id).collect::<Vec<_>>(), [a]);
    let claimed = store.claim_key_packages("alice", true, None).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.device_id).collect::<Vec<_>>(), [a]);
    let route = store.conversation_route(&conv(1)).await.unwrap().unwrap();
    assert_eq!(route.members, [a]);
    // Its key stays taken, marked removed.
    let owners = store.devices_by_credential_keys(&[b"key-laptop".to_vec()]).await.unwrap();
    assert_eq!(owners.len(), 1);
    assert!(owners[0].removed);
    assert!(!store.devices_by_credential_keys(&[b"key-alice".to_vec()]).await.unwrap()[0].removed);
    assert!(matches!(store.remove_device(999, NOW).await, Err(StoreError::UnknownDevice)));
}

pub async fn recovery_keys_change_only_from_the_current_one(store: Arc<dyn Store>) {
    let a = store.create_account(account("alice", 1)).await.unwrap();
    let keys = |store: Arc<dyn Store>| async move {
        let a = store.account_devices("alice").await.unwrap().unwrap();
        (a.recovery_key, a.recovery_binding, a.recovery_set_by, a.key_changes)
    };
    let set = |expected: Option<u8>, new: u8, change: Option<&[u8]>, by: Option<DeviceId>| {
        RecoveryKeySet {
            expected: expected.map(|e| vec![e]),
            new: vec![new],
            change: change.map(<[u8]>::to_vec),
            binding: Some(vec![new, new]),
            set_by: by.map(|d| (d, NOW)),
        }
    };
    assert_eq!(keys(store.clone()).await, (None, None, None, vec![]));
    // An account without one takes one; then only from the current one.
    assert!(!store.set_recovery_key("alice", set(Some(1), 2, None, None)).await.unwrap());
    assert!(store.set_recovery_key("alice", set(None, 1, None, Some(a))).await.unwrap());
    assert_eq!(
        keys(store.clone()).await,
        (Some(vec![1]), Some(vec![1, 1]), Some((a, NOW)), vec![])
    );
    assert!(!store.set_recovery_key("alice", set(None, 9, None, None)).await.unwrap());
    assert!(!store.set_recovery_key("alice", set(Some(9), 9, None, None)).await.unwrap());
    assert!(store.set_recovery_key("alice", set(Some(1), 2, Some(b"c1"), None)).await.unwrap());
    assert_eq!(
        keys(store.clone()).await,
        (Some(vec![2]), Some(vec![2, 2]), None, vec![b"c1".to_vec()])
    );
    assert!(matches!(
        store.set_recovery_key("nobody", set(None, 1, None, None)).await,
        Err(StoreError::UnknownUser)
    ));
}

pub async fn a_recovery_key_a_device_set_goes_with_it(store: Arc<dyn Store>) {
    let a = store.create_account(account("alice", 1)).await.unwrap();
    let b = store.create_account(account("bob", 1)).await.unwrap();
    let by = |d: DeviceId| RecoveryKeySet {
        expected: None,
        new: vec![1],
        change: None,
        binding: None,
        set_by: Some((d, NOW)),
    };
    assert!(store.set_recovery_key("alice", by(a)).await.unwrap());
    assert!(store.set_recovery_key("bob", by(b)).await.unwrap());
    store.remove_device(a, NOW + 1).await.unwrap();
    let alice = store.account_devices("alice").await.unwrap().unwrap();
    assert_eq!((alice.recovery_key, alice.recovery_set_by), (None, None));
    // Another account's is not touched.
    let bob = store.account_devices("bob").await.unwrap().unwrap();
    assert_eq!(bob.recovery_key, Some(vec![1]));
}

pub async fn a_recovered_account_starts_again_with_one_device(store: Arc<dyn Store>) {
    let with_code = NewAccount { recovery_key: Some(vec![1; 32]), ..account("alice", 2) };
    let a = store.create_account(with_code).await.unwrap();
    let b = store.create_account(account("bob", 1)).await.unwrap();
    store.create_conversation(new_conversation(a, b)).await.unwrap();
    let recovery = |verified_with: Vec<u8>, key: &[u8]| AccountRecovery {
        username: "alice".into(),
        verified_with,
        account_key: vec![7; 32],
        recovery_key: vec![8; 32],
        recovery_binding: vec![6; 64],
        change: b"change".to_vec(),
        credential_key: key.to_vec(),
        token_hash: [9; 32],
        now: NOW + 5,
    };
    // Only under the account's current recovery key, and with a key nobody holds.
    assert_eq!(
        store.recover_account(recovery(vec![2; 32], b"key-new")).await.unwrap(),
        RecoveryOutcome::OtherKey
    );
    assert_eq!(
        store.recover_account(recovery(vec![1; 32], b"key-bob")).await.unwrap(),
        RecoveryOutcome::KeyTaken
    );
    assert_eq!(store.device_auth(a).await.unwrap().map(|d| d.device_id), Some(a));
    let RecoveryOutcome::Recovered { device_id, removed, conversations } =
        store.recover_account(recovery(vec![1; 32], b"key-new")).await.unwrap()
    else {
        panic!("not recovered")
    };
    assert_eq!(removed, [a]);
    assert_eq!(conversations, [(conv(1), vec![b])]);
    // The old device is gone: no token, no membership, no KeyPackages.
    assert_eq!(store.device_auth(a).await.unwrap(), None);
    assert_eq!(store.conversation_route(&conv(1)).await.unwrap().unwrap().members, [b]);
    let found = store.account_devices("alice").await.unwrap().unwrap();
    assert_eq!(found.devices.iter().map(|d| d.device_id).collect::<Vec<_>>(), [device_id]);
    assert_eq!(found.account_key, Some(vec![7; 32]));
    assert_eq!(found.recovery_key, Some(vec![8; 32]));
    assert_eq!(found.key_changes, [b"change".to_vec()]);
    let auth = store.device_auth(device_id).await.unwrap().unwrap();
    assert_eq!((auth.username.as_str(), auth.token_hash), ("alice", [9; 32]));
    // The old code does not work twice.
    assert_eq!(
        store.recover_account(recovery(vec![1; 32], b"key-newer")).await.unwrap(),
        RecoveryOutcome::OtherKey
    );
}

pub async fn the_directory_moves_one_epoch_at_a_time(store: Arc<dyn Store>) {
    let st = |label: &str, epoch: u64, version: u64| KtState {
        label: label.as_bytes().to_vec(),
        epoch,
        version,
        data: format!("{label}@{epoch}").into_bytes(),
    };
    let first = KtWrite {
        records: vec![(b"head".to_vec(), b"e0".to_vec()), (b"n1".to_vec(), b"a".to_vec())],
        states: vec![],
        head: Some(0),
    };
    store.kt_write(first).await.unwrap();
    // Epoch 1: a node changes, ana's first state.
    let one = KtWrite {
        records: vec![(b"head".to_vec(), b"e1".to_vec()), (b"n1".to_vec(), b"b".to_vec())],
        states: vec![st("ana", 1, 1), st("bob", 1, 1)],
        head: Some(1),
    };
    store.kt_write(one).await.unwrap();
    // A second publisher writing epoch 1 again (or skipping to 3) is refused, and writes nothing.
    for head in [1, 3, 0] {
        let stale = KtWrite {
            records: vec![(b"n1".to_vec(), b"stale".to_vec())],
            states: vec![st("ana", 1, 9)],
            head: Some(head),
        };
        assert!(matches!(store.kt_write(stale).await, Err(StoreError::StaleEpoch)), "{head}");
    }
    let two = KtWrite {
        records: vec![(b"head".to_vec(), b"e2".to_vec())],
        states: vec![st("ana", 2, 2)],
        head: Some(2),
    };
    store.kt_write(two).await.unwrap();
    let got =
        store.kt_records(&[b"n1".to_vec(), b"nope".to_vec(), b"head".to_vec()]).await.unwrap();
    let mut got: Vec<_> = got.into_iter().collect();
    got.sort();
    assert_eq!(got, vec![(b"head".to_vec(), b"e2".to_vec()), (b"n1".to_vec(), b"b".to_vec())]);
    assert_eq!(store.kt_states(b"ana").await.unwrap(), vec![st("ana", 1, 1), st("ana", 2, 2)]);
    let mut latest = store
        .kt_latest_states(&[b"ana".to_vec(), b"bob".to_vec(), b"cy".to_vec()], None)
        .await
        .unwrap();
    latest.sort_by(|a, b| a.label.cmp(&b.label));
    assert_eq!(latest, vec![st("ana", 2, 2), st("bob", 1, 1)]);
    let at_one = store.kt_latest_states(&[b"ana".to_vec()], Some(1)).await.unwrap();
    assert_eq!(at_one, vec![st("ana", 1, 1)]);
    assert!(store.kt_latest_states(&[b"ana".to_vec()], Some(0)).await.unwrap().is_empty());
}

pub async fn the_directory_keeps_its_first_keys_roots_and_publisher(store: Arc<dyn Store>) {
    let (vrf, signing) = store.kt_keys((vec![1; 32], vec![2; 32])).await.unwrap();
    assert_eq!((vrf.expose(), signing.expose()), (&[1u8; 32][..], &[2u8; 32][..]));
    // A second node's keys lose to the first's.
    let (vrf, signing) = store.kt_keys((vec![3; 32], vec![4; 32])).await.unwrap();
    assert_eq!((vrf.expose(), signing.expose()), (&[1u8; 32][..], &[2u8; 32][..]));

    assert_eq!(store.kt_latest_root().await.unwrap(), None);
    let root = |epoch: u64, r: u8| KtRootRecord {
        epoch,
        root: vec![r; 32],
        signature: vec![r; 64],
        published_at: NOW + epoch,
    };
    for e in 1..=5 {
        store.add_kt_root(root(e, e as u8)).await.unwrap();
    }
    // An epoch's root is written once: a second one for it is not taken.
    store.add_kt_root(root(3, 99)).await.unwrap();
    assert_eq!(store.kt_roots(2, 2).await.unwrap(), vec![root(2, 2), root(3, 3)]);
    assert_eq!(store.kt_latest_root().await.unwrap(), Some(root(5, 5)));

    // One publisher at a time; another takes over once the lease has run out.
    assert!(store.kt_lead("a", NOW, NOW + 10).await.unwrap());
    assert!(!store.kt_lead("b", NOW + 5, NOW + 15).await.unwrap());
    assert!(store.kt_lead("a", NOW + 6, NOW + 16).await.unwrap());
    assert!(!store.kt_lead("b", NOW + 16, NOW + 26).await.unwrap());
    assert!(store.kt_lead("b", NOW + 17, NOW + 27).await.unwrap());
    assert!(!store.kt_lead("a", NOW + 18, NOW + 28).await.unwrap());

    // Accounts to publish: marked once however often, taken once.
    store.create_account(account("ana", 1)).await.unwrap();
    store.create_account(account("bob", 1)).await.unwrap();
    store.kt_mark(&["cy".to_string(), "cy".to_string()]).await.unwrap();
    store.kt_mark(&["cy".to_string()]).await.unwrap();
    assert_eq!(store.kt_take_dirty(10).await.unwrap(), vec!["cy".to_string()]);
    assert!(store.kt_take_dirty(10).await.unwrap().is_empty());
    store.kt_mark_all().await.unwrap();
    // A change comes before the accounts marked only to be checked.
    store.kt_mark(&["bob".to_string()]).await.unwrap();
    assert_eq!(store.kt_take_dirty(1).await.unwrap(), vec!["bob".to_string()]);
    let mut all = store.kt_take_dirty(10).await.unwrap();
    all.sort();
    assert_eq!(all, vec!["ana".to_string()]);
}
