//! Raw HTTP to a running app, the way another program on the machine would speak to it.

#![allow(dead_code)] // each test file uses a part
#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A GET with these headers, on a connection of its own.
pub async fn request(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    call(addr, "GET", path, headers, None).await
}

/// Any call; a `body` goes as JSON.
pub async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        text.push_str("Content-Type: application/json\r\n");
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    } else {
        text.push_str("\r\n");
    }
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Answer { status, head: head.to_string(), body: body.to_string() }
}

/// A session on a running app: its cookie and its token, as a browser holds them.
pub struct Session {
    pub addr: std::net::SocketAddr,
    pub cookie: String,
    pub token: String,
}

impl Session {
    /// Opens the printed address once.
    pub async fn open(running: &kith_app::Running) -> Self {
        let printed = running.url.split_once("127.0.0.1").unwrap().1;
        let opened = request(running.addr, &printed[printed.find('/').unwrap()..], &[]).await;
        let cookie = opened.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
        let token = opened.header("location").unwrap().trim_start_matches("/#session=").to_string();
        Session { addr: running.addr, cookie, token }
    }

    /// A call as the page makes it: the cookie, the token and the app's own origin.
    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        let origin = format!("http://{}", self.addr);
        let headers = [
            ("cookie", self.cookie.as_str()),
            ("x-kith-session", self.token.as_str()),
            ("origin", origin.as_str()),
        ];
        call(self.addr, method, path, &headers, body).await
    }
}
