//! The HTTP client against a local server, and its parsers.

use super::*;
use std::net::TcpListener;
use std::time::{Duration, Instant};

#[test]
fn urls_are_https_or_loopback() {
    let u =
        Url::parse("https://login.microsoftonline.com/organizations/oauth2/v2.0/token").unwrap();
    assert_eq!(
        (u.tls, u.host.as_str(), u.port, u.path.as_str()),
        (
            true,
            "login.microsoftonline.com",
            443,
            "/organizations/oauth2/v2.0/token"
        )
    );
    assert_eq!(u.host_header(), "login.microsoftonline.com");
    let u = Url::parse("http://127.0.0.1:8080/token?x=1").unwrap();
    assert_eq!(
        (u.tls, u.port, u.path.as_str()),
        (false, 8080, "/token?x=1")
    );
    assert_eq!(u.host_header(), "127.0.0.1:8080");
    let u = Url::parse("HTTP://[::1]:9/t").unwrap();
    assert_eq!((u.host.as_str(), u.port), ("::1", 9));
    assert_eq!(u.host_header(), "[::1]:9");
    assert!(Url::parse("http://localhost/t").is_ok());
    for bad in [
        "http://oauth2.googleapis.com/token",
        "ftp://x/y",
        "https://user:pw@host/t",
        "https://host:0/t",
        "https://host:99999/t",
        "https://",
        "https://ho st/t",
        "oauth2.googleapis.com/token",
    ] {
        assert!(Url::parse(bad).is_err(), "{bad}");
    }
    assert!(
        Url::parse("http://10.0.0.1/token")
            .unwrap_err()
            .to_string()
            .contains("not encrypted")
    );
}

#[test]
fn forms_are_encoded_and_decoded() {
    assert_eq!(
        form(&[
            ("scope", "https://mail.google.com/ offline_access"),
            ("a", "é&=+")
        ]),
        "scope=https%3A%2F%2Fmail.google.com%2F%20offline_access&a=%C3%A9%26%3D%2B"
    );
    assert_eq!(
        query_value("code=0.AX%2Fabc+d&state=s", "code").as_deref(),
        Some("0.AX/abc d")
    );
    assert_eq!(query_value("a=1", "code"), None);
    assert_eq!(query_value("code=%zz%4", "code").as_deref(), Some("%zz%4"));
}

#[test]
fn replies_are_parsed_with_length_chunks_or_close() {
    let r = parse_response(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 2\r\n\r\n{}",
    )
    .unwrap();
    assert_eq!(
        (r.status, r.body.as_slice(), r.content_type.as_deref()),
        (200, &b"{}"[..], Some("application/json; charset=utf-8"))
    );
    let r = parse_response(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n3;x=y\r\n\":1\r\n1\r\n}\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!((r.status, r.body.as_slice()), (400, &b"{\"a\":1}"[..]));
    let r = parse_response(b"HTTP/1.0 503 Busy\r\n\r\nlater").unwrap();
    assert_eq!((r.status, r.body.as_slice()), (503, &b"later"[..]));
    assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
    assert!(
        parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab").is_err()
    );
    assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
}

/// A one-shot server on the loopback: answers `reply` after `delay`, returns the request.
fn serve(reply: &'static [u8], delay: Duration) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
            if let Some(end) = find(&request, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if request.len() >= end + 4 + len {
                    break;
                }
            }
        }
        std::thread::sleep(delay);
        let _ = s.write_all(reply);
        request
    });
    (port, handle)
}

#[test]
fn a_form_is_posted_and_the_answer_read() {
    let (port, server) = serve(
        b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{\"access_token\":1}",
        Duration::ZERO,
    );
    let url = Url::parse(&format!("http://127.0.0.1:{port}/tenant/token")).unwrap();
    let r = post_form(
        &url,
        "grant_type=refresh_token",
        Limits::new(Duration::from_secs(5)),
        None,
    )
    .unwrap();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"{\"access_token\":1"[..])
    );
    let request = String::from_utf8(server.join().unwrap()).unwrap();
    assert!(
        request.starts_with("POST /tenant/token HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(request.contains(&format!("Host: 127.0.0.1:{port}\r\n")));
    assert!(request.contains("Content-Type: application/x-www-form-urlencoded\r\n"));
    assert!(request.ends_with("\r\n\r\ngrant_type=refresh_token"));
}

#[test]
fn a_slow_endpoint_times_out_and_the_error_holds_no_secret() {
    let (port, _server) = serve(b"HTTP/1.1 200 OK\r\n\r\n", Duration::from_secs(3));
    let url = Url::parse(&format!("http://127.0.0.1:{port}/token")).unwrap();
    let started = Instant::now();
    let err = post_form(
        &url,
        "refresh_token=SECRET-RT",
        Limits::new(Duration::from_millis(600)),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(started.elapsed() < Duration::from_secs(2), "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert!(!err.contains("SECRET-RT"), "{err}");
}

#[test]
fn a_closed_port_is_an_error_in_words() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = Url::parse(&format!("http://127.0.0.1:{port}/token")).unwrap();
    let err = post_form(&url, "", Limits::new(Duration::from_secs(2)), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot connect"), "{err}");
}
