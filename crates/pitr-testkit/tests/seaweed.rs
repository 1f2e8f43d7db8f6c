//! The SeaweedFS harness: a server that starts, answers on its S3 port, stops and restarts.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;

use pitr_testkit::SeaweedFs;

/// The HTTP status line of an unsigned `GET /` to `endpoint` (`http://127.0.0.1:PORT`).
fn status_line(endpoint: &str) -> Option<String> {
    let addr = endpoint.strip_prefix("http://")?;
    let mut conn = TcpStream::connect(addr).ok()?;
    conn.write_all(b"GET /pitr-test HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply).ok()?;
    reply.lines().next().map(str::to_string)
}

#[test]
fn server_starts_stops_and_restarts() {
    let mut server = SeaweedFs::start();
    assert!(server.is_running());
    // Unsigned requests are refused: the server enforces the credentials it was given.
    let line = status_line(&server.endpoint()).unwrap();
    assert!(line.contains(" 403 "), "{line}");
    let env = server.env();
    assert!(env
        .iter()
        .any(|(k, v)| k == "AWS_ENDPOINT_URL" && *v == server.endpoint()));
    assert!(env
        .iter()
        .any(|(k, v)| k == "AWS_SECRET_ACCESS_KEY" && v == server.secret_access_key()));

    server.stop();
    assert!(!server.is_running());
    assert!(status_line(&server.endpoint()).is_none(), "still listening");
    server.restart();
    assert!(server.is_running());
    assert!(status_line(&server.endpoint()).is_some());
}
