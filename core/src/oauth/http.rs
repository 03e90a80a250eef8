//! The one HTTP request the gateway makes: a form POST to a token endpoint, answered with a
//! small JSON document. Over `net`'s sockets (connect timeout, TLS verified, an optional CA,
//! one deadline for the whole exchange, the worker's shutdown checked once a second), with a
//! bounded reply. Plain `http://` only to the loopback (a test endpoint, or a local proxy),
//! as plaintext logins are allowed only there.

use std::io::{Read, Write};
use std::net::IpAddr;

use crate::net::{self, Limits, NetError, Stream, Tls};

/// A token reply is a few KB; more is not a token endpoint.
const MAX_REPLY: usize = 256 * 1024;

/// Where to POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// The loopback: `localhost`, `127.x.x.x`, `::1`.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What is wrong with a token endpoint's URL, in words for `set_oauth`'s caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("\"{0}\" is not an https:// URL")]
    NotHttp(String),
    #[error("\"{0}\" holds credentials: give client_id and client_secret instead")]
    Credentials(String),
    #[error("\"{0}\" has an unclosed [ in its host")]
    UnclosedBracket(String),
    #[error("\"{0}\" has a bad port")]
    BadPort(String),
    #[error("\"{0}\" has no valid host")]
    BadHost(String),
    #[error("\"{0}\" has spaces or control characters")]
    BadPath(String),
    #[error(
        "\"{0}\" is not encrypted: secrets go to a token endpoint over https:// only (http:// is allowed on the loopback)"
    )]
    NotEncrypted(String),
}

/// A token request that failed on the way: network failures in words, never the form (it
/// carries the secrets).
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("{0}")]
    Connect(NetError),
    #[error("token endpoint {place}: {source}")]
    Tls { place: String, source: NetError },
    #[error("sending to the token endpoint {place} failed: {source}")]
    Send {
        place: String,
        source: std::io::Error,
    },
    #[error("reading the token endpoint's answer ({place}) failed: {source}")]
    Read {
        place: String,
        source: std::io::Error,
    },
    #[error("the token endpoint {place} answered {source}")]
    Answer {
        place: String,
        source: ResponseError,
    },
}

/// What is wrong with an HTTP reply ("the token endpoint … answered <this>").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("an incomplete HTTP head")]
    IncompleteHead,
    #[error("something that is not HTTP: \"{0}\"")]
    NotHttp(String),
    #[error("a body shorter than announced ({got} of {announced} bytes)")]
    ShortBody { got: usize, announced: usize },
    #[error("a truncated chunked body")]
    TruncatedChunk,
    #[error("a malformed chunked body")]
    MalformedChunk,
}

impl Url {
    /// `https://host[:port]/path`, or `http://` on the loopback. The error says what is wrong
    /// in words for `set_oauth`'s caller.
    pub fn parse(url: &str) -> Result<Url, UrlError> {
        let url = url.trim();
        let (tls, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
            (false, rest)
        } else {
            return Err(UrlError::NotHttp(url.to_string()));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(UrlError::Credentials(url.to_string()));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| UrlError::UnclosedBracket(url.to_string()))?;
            (host.to_string(), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| UrlError::BadPort(url.to_string()))?,
            None if tls => 443,
            None => 80,
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::BadHost(url.to_string()));
        }
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::BadPath(url.to_string()));
        }
        if !tls && !is_loopback(&host) {
            return Err(UrlError::NotEncrypted(url.to_string()));
        }
        Ok(Url {
            tls,
            host,
            port,
            path,
        })
    }

    /// The `Host` header: the port only when it is not the scheme's.
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// What came back.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// POSTs `form` (already `application/x-www-form-urlencoded`) and reads the whole reply
/// within `limits.timeout` (connect, TLS, the request and the reply together). Errors are
/// network failures, in words; they never hold the form (it carries the secrets).
pub fn post_form(
    url: &Url,
    form: &str,
    limits: Limits,
    ca_cert: Option<&str>,
) -> Result<Response, PostError> {
    let place = format!("{}:{}", url.host, url.port);
    let (tcp, deadline) = net::connect(&url.host, url.port, limits).map_err(PostError::Connect)?;
    deadline.start(limits.timeout);
    let mut stream = if url.tls {
        let tls = Tls {
            host: &url.host,
            verify: true,
            ca_cert,
        };
        net::secure(tcp, &tls).map_err(|source| PostError::Tls {
            place: place.clone(),
            source,
        })?
    } else {
        Stream::Plain(tcp)
    };
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Accept: application/json\r\nUser-Agent: mail_gateway/{}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        url.path,
        url.host_header(),
        env!("CARGO_PKG_VERSION"),
        form.len()
    );
    stream
        .write_all(request.as_bytes())
        .and_then(|_| stream.write_all(form.as_bytes()))
        .and_then(|_| stream.flush())
        .map_err(|source| PostError::Send {
            place: place.clone(),
            source,
        })?;
    let raw = read_reply(&mut stream).map_err(|source| PostError::Read {
        place: place.clone(),
        source,
    })?;
    parse_response(&raw).map_err(|source| PostError::Answer { place, source })
}

/// Reads until the server closes, or until the body announced by `Content-Length` is in.
fn read_reply(stream: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(4096);
    let mut buf = [0u8; 8192];
    loop {
        if let Some(total) = complete_length(&raw)
            && raw.len() >= total
        {
            raw.truncate(total);
            return Ok(raw);
        }
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            // Some servers reset instead of closing after their answer.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty() => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(raw);
        }
        if raw.len() + n > MAX_REPLY {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("more than {} KiB", MAX_REPLY / 1024),
            ));
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// The length of the whole reply when its head says it (`Content-Length`, no chunking).
fn complete_length(raw: &[u8]) -> Option<usize> {
    let end = find(raw, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut length = None;
    for line in head.split("\r\n").skip(1) {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse::<usize>().ok();
        }
    }
    Some(end + length?)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Status line, headers, body (de-chunked). Interim `1xx` answers are skipped.
pub fn parse_response(mut raw: &[u8]) -> Result<Response, ResponseError> {
    loop {
        let end = find(raw, b"\r\n\r\n").ok_or(ResponseError::IncompleteHead)?;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let body = &raw[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut words = status_line.split_whitespace();
        let version = words.next().unwrap_or_default();
        let status = words
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| {
                ResponseError::NotHttp(net::printable(status_line.chars().take(60).collect()))
            })?;
        if (100..200).contains(&status) {
            raw = body;
            continue;
        }
        let mut chunked = false;
        let mut length = None;
        let mut content_type = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("content-type") {
                content_type = Some(value.to_ascii_lowercase());
            }
        }
        let body = if chunked {
            dechunk(body)?
        } else {
            match length {
                Some(n) if n <= body.len() => body[..n].to_vec(),
                Some(n) => {
                    return Err(ResponseError::ShortBody {
                        got: body.len(),
                        announced: n,
                    });
                }
                None => body.to_vec(),
            }
        };
        return Ok(Response {
            status,
            content_type,
            body,
        });
    }
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, ResponseError> {
    let mut body = Vec::new();
    loop {
        let end = find(rest, b"\r\n").ok_or(ResponseError::TruncatedChunk)?;
        let size_text = String::from_utf8_lossy(&rest[..end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| ResponseError::MalformedChunk)?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err(ResponseError::TruncatedChunk);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// `application/x-www-form-urlencoded` (and query string) encoding of one value: the
/// unreserved characters as they are, everything else `%XX` (a space too: valid in both).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3 / 2);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `name=value&…`, each encoded.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The decoded value of `name` in a query string or form (`+` is a space).
pub fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (decode(k) == name).then(|| decode(v))
    })
}

fn decode(text: &str) -> String {
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 2;
            }
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    #[test]
    fn urls_are_https_or_loopback() {
        let u = Url::parse("https://login.microsoftonline.com/organizations/oauth2/v2.0/token")
            .unwrap();
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
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab")
                .is_err()
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
}
