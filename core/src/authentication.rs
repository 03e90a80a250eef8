//! Who wrote a received message: the authentication verdict on its From domain. First the
//! `Authentication-Results` (RFC 8601) that a server the administrator trusts wrote — the
//! topmost one with a trusted authserv-id; headers of any other server are a stranger's words
//! and ignored. Where there is none, our own DKIM check with mail-auth (DMARC alignment through
//! its organisational-domain walk); SPF needs the connecting IP, which a fetched message no
//! longer has. The verdict decides whether a message may speak for one of our own domains
//! (docs/SECURITY.md). It knows nothing of PostgreSQL.

use std::cell::Cell;
use std::time::Duration;

use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::{AuthenticatedMessage, DkimResult, DmarcResult, MessageAuthenticator, SpfOutput};
use mail_parser::{HeaderValue, MessageParser};

use crate::dns::{Dns, DnsError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The From domain is verified: DMARC passed, or a DKIM signature (or SPF) aligned with it.
    Pass,
    /// A check of the From domain failed.
    Fail,
    /// Nothing verified it either way.
    None,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::None => "none",
        }
    }
}

/// The verdict and, in words, what it rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    pub verdict: Verdict,
    pub detail: String,
}

impl Authentication {
    fn new(verdict: Verdict, detail: impl Into<String>) -> Authentication {
        Authentication {
            verdict,
            detail: detail.into(),
        }
    }
}

/// Whether `domain` and `other` are aligned in DMARC's relaxed sense without a public-suffix
/// list: equal, or one a subdomain of the other (a signer can only hold keys under its own
/// domain, so this never lets a stranger pass).
pub fn aligned(domain: &str, other: &str) -> bool {
    let (a, b) = (domain.to_lowercase(), other.to_lowercase());
    !a.is_empty()
        && !b.is_empty()
        && (a == b || a.ends_with(&format!(".{b}")) || b.ends_with(&format!(".{a}")))
}

/// `text` without RFC 5322 comments (parentheses, nested, quoted strings kept).
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for c in text.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                continue;
            }
            _ => {}
        }
        if depth == 0 {
            out.push(c);
        }
    }
    out
}

/// One result of an `Authentication-Results` header: `dkim=pass header.d=example.com`.
#[derive(Debug, Default, PartialEq, Eq)]
struct MethodResult {
    method: String,
    result: String,
    /// `ptype.property` → value, lower-case.
    properties: Vec<(String, String)>,
}

impl MethodResult {
    fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The authserv-id and results of one `Authentication-Results` value.
fn parse_results(value: &str) -> Option<(String, Vec<MethodResult>)> {
    let value = without_comments(value);
    let mut parts = value.split(';');
    let id = parts.next()?.split_whitespace().next()?.to_lowercase();
    if id.contains('=') {
        return None;
    }
    let results = parts
        .filter_map(|part| {
            let mut tokens = part.split_whitespace();
            let (method, result) = tokens.next()?.split_once('=')?;
            let method = method.split('/').next().unwrap_or(method);
            Some(MethodResult {
                method: method.to_lowercase(),
                result: result.to_lowercase(),
                properties: tokens
                    .filter_map(|t| t.split_once('='))
                    .map(|(n, v)| (n.to_lowercase(), v.trim_matches('"').to_lowercase()))
                    .collect(),
            })
        })
        .collect();
    Some((id, results))
}

/// The domain of an address or `@domain` (the `header.i` of DKIM, `smtp.mailfrom` of SPF).
fn domain_part(value: &str) -> &str {
    value.rsplit_once('@').map_or(value, |(_, d)| d)
}

/// The verdict the topmost `Authentication-Results` of a trusted server gives for
/// `from_domain`, if there is one.
pub fn from_trusted_results(
    raw: &[u8],
    trusted: &[String],
    from_domain: &str,
) -> Option<Authentication> {
    if trusted.is_empty() {
        return None;
    }
    let (id, results) = topmost_trusted(raw, trusted)?;
    Some(verdict_of(&id, &results, from_domain))
}

/// The authserv-id and results of the topmost `Authentication-Results` a trusted server wrote.
fn topmost_trusted(raw: &[u8], trusted: &[String]) -> Option<(String, Vec<MethodResult>)> {
    let headers = MessageParser::default().parse_headers(raw)?;
    headers
        .header_values("Authentication-Results")
        .filter_map(|v| match v {
            HeaderValue::Text(t) => Some(t.to_string()),
            _ => None,
        })
        .filter_map(|v| parse_results(&v))
        .find(|(id, _)| trusted.iter().any(|t| t.eq_ignore_ascii_case(id)))
}

/// What the results `id` wrote say of `from_domain`: DMARC's pass or fail, else a DKIM or SPF
/// pass aligned with it, else a DKIM or SPF failure, else nothing.
fn verdict_of(id: &str, results: &[MethodResult], from_domain: &str) -> Authentication {
    let by = |r: &MethodResult, what: &str| format!("{}={} {what} (by {id})", r.method, r.result);
    let of = |method: &'static str| results.iter().filter(move |r| r.method == method);
    if let Some(dmarc) = of("dmarc").next()
        && matches!(dmarc.result.as_str(), "pass" | "fail")
    {
        let verdict = if dmarc.result == "pass" {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        let domain = dmarc.property("header.from").unwrap_or(from_domain);
        return Authentication::new(verdict, by(dmarc, &format!("header.from={domain}")));
    }
    for dkim in of("dkim").filter(|r| r.result == "pass") {
        let signer = dkim
            .property("header.d")
            .or(dkim.property("header.i").map(domain_part))
            .unwrap_or_default();
        if aligned(signer, from_domain) {
            return Authentication::new(Verdict::Pass, by(dkim, &format!("header.d={signer}")));
        }
    }
    for spf in of("spf").filter(|r| r.result == "pass") {
        let domain = spf
            .property("smtp.mailfrom")
            .map(domain_part)
            .unwrap_or_default();
        if aligned(domain, from_domain) {
            return Authentication::new(Verdict::Pass, by(spf, &format!("smtp.mailfrom={domain}")));
        }
    }
    let failed = results
        .iter()
        .find(|r| matches!(r.method.as_str(), "dkim" | "spf") && r.result == "fail");
    match failed {
        Some(r) => Authentication::new(Verdict::Fail, by(r, "")),
        None => Authentication::new(
            Verdict::None,
            format!("nothing aligned with {from_domain} passed (by {id})"),
        ),
    }
}

/// Our own DKIM (and DMARC-alignment) check, for messages that no trusted server checked.
/// DNS through the resolver given (`mail_gateway.dns_server` in tests); after one lookup that
/// could not be answered, the rest of the run skips the check instead of waiting again.
pub struct Verifier {
    dns: Dns,
    authenticator: MessageAuthenticator,
    dns_down: Cell<bool>,
}

/// The longest one message's check may wait for DNS.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

impl Verifier {
    pub fn new(dns_server: Option<&str>) -> Result<Verifier, DnsError> {
        let dns = Dns::new(dns_server, Duration::from_secs(2))?;
        let authenticator = MessageAuthenticator(dns.resolver().clone());
        Ok(Verifier {
            dns,
            authenticator,
            dns_down: Cell::new(false),
        })
    }

    /// The verdict on `from_domain` by the message's own DKIM signatures.
    pub fn verify(&self, raw: &[u8], from_domain: &str) -> Authentication {
        if !has_dkim_signature(raw) {
            return Authentication::new(Verdict::None, "no DKIM signature, no trusted results");
        }
        if self.dns_down.get() {
            return Authentication::new(Verdict::None, "not checked: DNS did not answer");
        }
        let Some(message) = AuthenticatedMessage::parse(raw) else {
            return Authentication::new(Verdict::None, "no header to check");
        };
        let checked = self.dns.block_on(async {
            tokio::time::timeout(CHECK_TIMEOUT, async {
                let dkim = self.authenticator.verify_dkim(&message).await;
                let spf = SpfOutput::new(from_domain.to_string());
                let dmarc = self
                    .authenticator
                    .verify_dmarc(DmarcParameters::new(&message, &dkim, from_domain, &spf))
                    .await;
                judge(&dkim, dmarc.dkim_result(), from_domain)
            })
            .await
        });
        match checked {
            Ok(auth) => {
                if auth.detail.contains("temporary") {
                    self.dns_down.set(true);
                }
                auth
            }
            Err(_) => {
                self.dns_down.set(true);
                Authentication::new(Verdict::None, "not checked: DNS did not answer in time")
            }
        }
    }
}

/// The verdict on a received message: a trusted server's results, else — with a `verifier`,
/// outside any transaction — our own DKIM check, else none.
pub fn authenticate(raw: &[u8], trusted: &[String], verifier: Option<&Verifier>) -> Authentication {
    let from_domain = MessageParser::default()
        .parse_headers(raw)
        .and_then(|m| {
            m.from()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .map(|a| domain_part(a).to_lowercase())
        })
        .unwrap_or_default();
    if from_domain.is_empty() {
        return Authentication::new(Verdict::None, "no From address to verify");
    }
    if let Some(auth) = from_trusted_results(raw, trusted, &from_domain) {
        return auth;
    }
    match verifier {
        Some(verifier) => verifier.verify(raw, &from_domain),
        None => Authentication::new(
            Verdict::None,
            "no Authentication-Results of a trusted server (mail.authentication.trusted_servers)",
        ),
    }
}

fn has_dkim_signature(raw: &[u8]) -> bool {
    MessageParser::default()
        .parse_headers(raw)
        .is_some_and(|m| m.header_raw("DKIM-Signature").is_some())
}

/// The verdict from mail-auth's results: DMARC's DKIM alignment when the domain publishes
/// DMARC, else a passing signature aligned with the From domain.
fn judge(
    dkim: &[mail_auth::DkimOutput<'_>],
    dmarc_dkim: &DmarcResult,
    from_domain: &str,
) -> Authentication {
    if *dmarc_dkim == DmarcResult::Pass {
        return Authentication::new(
            Verdict::Pass,
            format!("dmarc=pass header.from={from_domain} (DKIM aligned)"),
        );
    }
    let signer = |o: &mail_auth::DkimOutput<'_>| {
        o.signature()
            .map(|s| s.d.to_lowercase())
            .unwrap_or_default()
    };
    if let Some(o) = dkim
        .iter()
        .find(|o| *o.result() == DkimResult::Pass && aligned(&signer(o), from_domain))
    {
        return Authentication::new(Verdict::Pass, format!("dkim=pass header.d={}", signer(o)));
    }
    if let Some(o) = dkim
        .iter()
        .find(|o| matches!(o.result(), DkimResult::TempError(_)))
    {
        return Authentication::new(
            Verdict::None,
            format!(
                "dkim=temperror header.d={} (temporary DNS failure)",
                signer(o)
            ),
        );
    }
    // A signature of the From domain that does not verify (mail-auth calls a body that no
    // longer matches its hash "neutral"; RFC 6376 calls it a failure) refutes the From.
    let broken = |o: &&mail_auth::DkimOutput<'_>| {
        matches!(
            o.result(),
            DkimResult::Fail(_) | DkimResult::PermError(_) | DkimResult::Neutral(_)
        ) && aligned(&signer(o), from_domain)
    };
    match dkim.iter().find(broken) {
        Some(o) => Authentication::new(
            Verdict::Fail,
            format!(
                "dkim=fail header.d={} ({})",
                signer(o),
                describe(o.result())
            ),
        ),
        None => Authentication::new(
            Verdict::None,
            format!("no DKIM signature aligned with {from_domain} passed"),
        ),
    }
}

fn describe(result: &DkimResult) -> String {
    match result {
        DkimResult::Fail(e)
        | DkimResult::PermError(e)
        | DkimResult::Neutral(e)
        | DkimResult::TempError(e) => e.to_string(),
        DkimResult::Pass => "pass".into(),
        DkimResult::None => "none".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRUSTED: &[&str] = &["mx.mycompany.com"];

    fn trusted() -> Vec<String> {
        TRUSTED.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_topmost_trusted_results_decide() {
        let raw = b"Authentication-Results: mx.mycompany.com;\r\n dkim=pass (good) header.d=customer.example;\r\n spf=fail smtp.mailfrom=x@elsewhere.example\r\n\
Authentication-Results: mx.mycompany.com; dmarc=fail header.from=customer.example\r\n\
From: Bob <bob@customer.example>\r\n\r\nhi\r\n";
        let a = from_trusted_results(raw, &trusted(), "customer.example").unwrap();
        assert_eq!(a.verdict, Verdict::Pass, "{a:?}");
        assert!(a.detail.contains("header.d=customer.example"), "{a:?}");
    }

    #[test]
    fn results_of_an_untrusted_server_are_ignored() {
        let raw = b"Authentication-Results: evil.example; dmarc=pass header.from=mycompany.com\r\n\
From: CEO <ceo@mycompany.com>\r\n\r\nhi\r\n";
        assert_eq!(from_trusted_results(raw, &trusted(), "mycompany.com"), None);
        assert_eq!(from_trusted_results(raw, &[], "mycompany.com"), None);
    }

    #[test]
    fn dmarc_fail_and_unaligned_passes_do_not_pass() {
        let raw = b"Authentication-Results: MX.mycompany.com 1; dmarc=fail (p=reject) header.from=mycompany.com\r\n\r\n";
        let a = from_trusted_results(raw, &trusted(), "mycompany.com").unwrap();
        assert_eq!(a.verdict, Verdict::Fail);
        let raw = b"Authentication-Results: mx.mycompany.com; dkim=pass header.d=attacker.example; spf=pass smtp.mailfrom=a@attacker.example\r\n\r\n";
        let a = from_trusted_results(raw, &trusted(), "mycompany.com").unwrap();
        assert_eq!(a.verdict, Verdict::None, "{a:?}");
    }

    #[test]
    fn alignment_is_by_subdomain_in_either_direction() {
        assert!(aligned("mail.example.com", "example.com"));
        assert!(aligned("example.com", "EXAMPLE.com"));
        assert!(!aligned("badexample.com", "example.com"));
        assert!(!aligned("", "example.com"));
    }

    #[test]
    fn comments_are_not_results() {
        let (id, results) = parse_results(
            "mx.example (a; dkim=pass) ; spf=pass (x=y) smtp.mailfrom=\"a@b.example\"",
        )
        .unwrap();
        assert_eq!(id, "mx.example");
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].property("smtp.mailfrom"), Some("a@b.example"));
        // Microsoft 365 writes no authserv-id: such a header names no server to trust.
        assert!(
            parse_results("spf=pass smtp.mailfrom=x.example; dkim=pass header.d=x.example")
                .is_none()
        );
    }
}
