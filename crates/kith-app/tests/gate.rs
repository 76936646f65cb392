//! The app's gate, from outside: raw HTTP requests to a running app on an empty profile, the
//! way another program on the machine would make them. (The browser's side is in
//! `web/tests/security.spec.ts`.)

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

mod common;
use common::request;

/// The page `kith app` hands a browser launcher: readable by its owner only, good for one
/// session, gone once used. The secret is never on a command line.
#[tokio::test]
async fn the_launch_page_is_private_and_good_once() {
    let profile = tempfile::tempdir().unwrap();
    let options = kith_app::AppOptions { profile: profile.path().to_path_buf(), port: 0 };
    let running = kith_app::serve(options).await.unwrap();
    let file = running.page_file().unwrap();
    assert_eq!(file, profile.path().join(kith_app::PAGE_FILE));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the launch page is readable by others: {mode:o}");
    }
    let page = std::fs::read_to_string(&file).unwrap();
    let secret = running.url.split("key=").nth(1).unwrap();
    assert!(!page.contains(secret), "the launch page holds the printed secret");
    let start = page.find("/open?once=").unwrap();
    let path: String = page[start..].chars().take_while(|c| *c != '"').collect();

    let first = request(running.addr, &path, &[]).await;
    assert_eq!(first.status, 303, "{}", first.head);
    assert!(first.header("location").unwrap().starts_with("/#session="), "{}", first.head);
    assert!(!file.exists(), "the launch page stays after its key was used");
    let again = request(running.addr, &path, &[]).await;
    assert_eq!(again.status, 403, "a launch key worked twice");

    // The printed address works as often as the person opens it, each time a new session.
    let printed = running.url.split_once("127.0.0.1").unwrap().1;
    let printed = &printed[printed.find('/').unwrap()..];
    let a = request(running.addr, printed, &[]).await;
    let b = request(running.addr, printed, &[]).await;
    assert_eq!((a.status, b.status), (303, 303));
    assert_ne!(a.header("location"), b.header("location"));
}

/// A session is the cookie and its token together: another server on 127.0.0.1 (a different
/// port gets the same cookies) learns the cookie but not the token, and can call nothing.
#[tokio::test]
async fn a_call_needs_the_cookie_and_its_token() {
    let profile = tempfile::tempdir().unwrap();
    let options = kith_app::AppOptions { profile: profile.path().to_path_buf(), port: 0 };
    let running = kith_app::serve(options).await.unwrap();
    let printed = running.url.split_once("127.0.0.1").unwrap().1;
    let opened = request(running.addr, &printed[printed.find('/').unwrap()..], &[]).await;
    let cookie = opened.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    let token = opened.header("location").unwrap().trim_start_matches("/#session=").to_string();
    let other = request(running.addr, &printed[printed.find('/').unwrap()..], &[]).await;
    let other_token =
        other.header("location").unwrap().trim_start_matches("/#session=").to_string();

    let me = |headers: Vec<(&'static str, String)>| {
        let addr = running.addr;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            request(addr, "/api/me", &h).await
        }
    };
    assert_eq!(me(vec![("cookie", cookie.clone())]).await.status, 401);
    assert_eq!(me(vec![("x-kith-session", token.clone())]).await.status, 401);
    let crossed = me(vec![("cookie", cookie.clone()), ("x-kith-session", other_token)]).await;
    assert_eq!(crossed.status, 401, "one session's token opened another's cookie");
    let ok = me(vec![("cookie", cookie.clone()), ("x-kith-session", token)]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("\"registered\":false"), "{}", ok.body);

    // Without a session, a call is told in JSON; a person, in a page of words.
    let call = me(vec![]).await;
    assert!(call.body.contains("\"no_session\""), "{}", call.body);
    let page = request(running.addr, "/", &[]).await;
    assert_eq!(page.status, 401);
    assert!(page.header("content-type").unwrap().starts_with("text/html"), "{}", page.head);
    assert!(page.body.contains("kith app"), "{}", page.body);
    assert!(!page.body.contains("<script"), "{}", page.body);
    // The page's files need only the cookie: they are not secret.
    assert_eq!(request(running.addr, "/app.js", &[("cookie", &cookie)]).await.status, 200);
}

/// Another local user holding sockets open cannot make the app unreachable: silent connections
/// make room for new ones (and close after the header deadline), so the page's next request
/// gets through however many were opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_keep_the_page_out() {
    // Both ends live in this process: room for both.
    kith_listen::raise_open_file_limit();
    let profile = tempfile::tempdir().unwrap();
    let options = kith_app::AppOptions { profile: profile.path().to_path_buf(), port: 0 };
    let running = kith_app::serve(options).await.unwrap();
    let mut silent = Vec::new();
    for _ in 0..1200 {
        match tokio::net::TcpStream::connect(running.addr).await {
            Ok(s) => silent.push(s),
            Err(_) => break,
        }
    }
    assert!(silent.len() >= 600, "only {} connections could be opened", silent.len());
    let printed = running.url.split_once("127.0.0.1").unwrap().1;
    let opened = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        request(running.addr, &printed[printed.find('/').unwrap()..], &[]),
    )
    .await
    .expect("the app answered the page while silent connections were held");
    assert_eq!(opened.status, 303, "{}", opened.head);
    drop(silent);
}
