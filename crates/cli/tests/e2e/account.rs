//! A user's own account: their devices (listed with the current one
//! marked, signed out one by one, at once) and their password (changed
//! with the current one, signing out every other device); an upload still
//! running when the account is deleted does not land. Real HTTP, both
//! backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_client::{ClientError, Remote};

use crate::common::{Backend, TestServer, names, random_data};

on_both_backends!(
    devices_are_listed_and_a_revoked_one_is_out_at_once,
    a_password_change_signs_out_every_other_device,
    an_upload_under_way_when_its_account_is_deleted_does_not_land
);

fn status(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Api {
            status, message, ..
        } => (status, message),
        other => panic!("not an API answer: {other}"),
    }
}

async fn devices_are_listed_and_a_revoked_one_is_out_at_once(b: Backend) {
    let s = TestServer::start(b).await;
    let laptop = s.user("alice").await;
    let phone = s.login("alice", "alice-password", "phone").await;
    let bob = s.user("bob").await;

    let list = laptop.devices().await.unwrap().devices;
    let names: Vec<(&str, bool)> = list.iter().map(|d| (d.name.as_str(), d.current)).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&("laptop", true)), "{names:?}");
    assert!(names.contains(&("phone", false)), "{names:?}");
    assert!(list.iter().all(|d| d.last_seen_ms.is_some()));
    let phone_id = list.iter().find(|d| d.name == "phone").unwrap().id.clone();
    assert!(
        phone
            .devices()
            .await
            .unwrap()
            .devices
            .iter()
            .any(|d| d.name == "phone" && d.current)
    );

    // Someone else cannot sign alice's phone out, nor learn it exists.
    let (code, _) = status(bob.revoke_device(&phone_id).await.unwrap_err());
    assert_eq!(code, 404);
    phone.list("/").await.unwrap();

    // Alice can, and its very next request is refused.
    laptop.revoke_device(&phone_id).await.unwrap();
    let (code, _) = status(phone.list("/").await.unwrap_err());
    assert_eq!(code, 401);
    let left: Vec<String> = laptop
        .devices()
        .await
        .unwrap()
        .devices
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(left, ["laptop"]);
    let (code, message) = status(laptop.revoke_device(&phone_id).await.unwrap_err());
    assert_eq!(code, 404, "{message}");
    laptop.list("/").await.unwrap();
}

async fn a_password_change_signs_out_every_other_device(b: Backend) {
    let s = TestServer::start(b).await;
    let laptop = s.user("alice").await;
    let phone = s.login("alice", "alice-password", "phone").await;
    let tablet = s.login("alice", "alice-password", "tablet").await;

    // A wrong current password changes nothing.
    let (code, message) = status(
        laptop
            .change_password("not it", "a much better one", false)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("current password is wrong"), "{message}");
    phone.list("/").await.unwrap();
    // A new one too short is refused, saying how long it must be.
    let (code, message) = status(
        laptop
            .change_password("alice-password", "short", false)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400, "{message}");
    assert!(message.contains("at least 8"), "{message}");

    let done = laptop
        .change_password("alice-password", "a much better one", false)
        .await
        .unwrap();
    assert_eq!(done.signed_out, 2);
    for other in [&phone, &tablet] {
        assert_eq!(status(other.list("/").await.unwrap_err()).0, 401);
    }
    laptop.list("/").await.unwrap();
    let anon = Remote::new(&s.url, None).unwrap();
    assert_eq!(
        status(
            anon.login("alice", "alice-password", "x")
                .await
                .unwrap_err()
        )
        .0,
        401
    );
    let again = s.login("alice", "a much better one", "phone").await;
    again.list("/").await.unwrap();

    // Signing out here too leaves no device signed in.
    let done = again
        .change_password("a much better one", "the third of them", true)
        .await
        .unwrap();
    assert_eq!(done.signed_out, 2);
    for r in [&laptop, &again] {
        assert_eq!(status(r.list("/").await.unwrap_err()).0, 401);
    }
}

async fn an_upload_under_way_when_its_account_is_deleted_does_not_land(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = s.user("alice").await;
    let admin = s.login("admin", &s.admin_password, "console").await;
    alice
        .upload("/kept.txt", None, "kept".into())
        .await
        .unwrap();

    // The body's first part goes (more than a block's worth, so the server
    // stores a block of it), then it waits for the word to finish.
    let before = s.store_bytes().await;
    let (finish, go) = tokio::sync::oneshot::channel::<()>();
    let head = random_data(20 << 20, 7);
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(head) });
    let rest = futures::stream::once(async move {
        let _ = go.await;
        Ok::<_, std::io::Error>(vec![b'b'; 64 * 1024])
    });
    let upload = {
        let alice = alice.clone();
        tokio::spawn(async move {
            let body = reqwest::Body::wrap_stream(futures::StreamExt::chain(first, rest));
            alice.upload("/late.bin", None, body).await
        })
    };
    // The server has taken the request in (a block of it is stored)
    // before the account goes.
    let began = std::time::Instant::now();
    while s.store_bytes().await <= before {
        assert!(
            began.elapsed() < std::time::Duration::from_secs(60),
            "no block stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    admin.delete_user("alice", false).await.unwrap();
    let _ = finish.send(());
    let (code, message) = status(upload.await.unwrap().unwrap_err());
    assert!(code == 403 || code == 401, "{code} {message}");

    // Restored, the account holds what it held before, and nothing else.
    admin.restore_user("alice").await.unwrap();
    let alice = s.login("alice", "alice-password", "laptop").await;
    assert_eq!(names(&alice, "/").await, ["kept.txt"]);
}
