//! The one HTTP request the gateway makes: a form POST to a token endpoint, answered with a
//! small JSON document. Over `net`'s sockets (connect timeout, TLS verified, an optional CA,
//! one deadline for the whole exchange, the worker's shutdown checked once a second), with a
//! bounded reply. Plain `http://` only to the loopback (a test endpoint, or a local proxy),
//! as plaintext logins are allowed only there.

mod form;
#[cfg(test)]
mod tests;
mod url;

use std::io::{Read, Write};

pub use form::{encode, form, query_value};
pub use url::{Url, UrlError, is_loopback};

use crate::net::{self, Limits, NetError, Stream, Tls};

/// A token reply is a few KB; more is not a token endpoint.
const MAX_REPLY: usize = 256 * 1024;

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
