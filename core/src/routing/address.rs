//! Email addresses as the gateway reads them: a `From`-style mailbox and the entries of a
//! server's `from_filter`. Parsing is lettre's RFC 5322 mailbox parser; this module adds the
//! lower-casing and the quoting rules of the gateway.

use std::str::FromStr;

use lettre::Address;
use lettre::message::Mailbox;

/// A mailbox such as `"Admin" <admin@example.com>`: an optional display name and an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub name: Option<String>,
    /// The address exactly as written (case kept: the local part may be case-sensitive).
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed email address \"{input}\"")]
pub struct AddressError {
    pub input: String,
}

impl Sender {
    pub fn parse(input: &str) -> Result<Sender, AddressError> {
        let mailbox = Mailbox::from_str(input.trim()).map_err(|_| AddressError {
            input: input.to_string(),
        })?;
        let name = mailbox.name.filter(|n| !n.trim().is_empty());
        Ok(Sender {
            name,
            address: mailbox.email.to_string(),
        })
    }

    /// The address lower-cased, for comparisons (`Admin@Example.COM` is `admin@example.com`).
    pub fn normalized(&self) -> String {
        self.address.to_lowercase()
    }

    /// The domain, lower-cased.
    pub fn domain(&self) -> String {
        domain_of(&self.normalized()).to_string()
    }

    /// The display name, or the local part when there is none (the encapsulation rule).
    pub fn name_or_local_part(&self) -> &str {
        match &self.name {
            Some(name) => name,
            None => self.address.rsplit_once('@').map_or("", |(local, _)| local),
        }
    }
}

/// `"name" <address>`, the name always quoted so that commas, dots and non-ASCII letters in it
/// never change how the header is read.
pub fn format_mailbox(name: &str, address: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            // A header value is one line: a line break in a name is never kept.
            '\r' | '\n' => quoted.push(' '),
            _ => quoted.push(c),
        }
    }
    format!("\"{quoted}\" <{address}>")
}

pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, domain)| domain)
}

/// One entry of a `from_filter`: a whole address or a domain, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterEntry {
    Address(String),
    Domain(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed from_filter entry \"{entry}\"")]
pub struct FilterError {
    pub entry: String,
}

/// A comma-separated list of domains and addresses. Empty entries are ignored; an empty list
/// (or NULL) means "may send as anyone".
pub fn parse_from_filter(filter: &str) -> Result<Vec<FilterEntry>, FilterError> {
    let mut entries = Vec::new();
    for raw in filter.split(',') {
        let entry = raw.trim().to_lowercase();
        if entry.is_empty() {
            continue;
        }
        let parsed = if entry.contains('@') {
            Address::from_str(&entry).map(|_| FilterEntry::Address(entry.clone()))
        } else {
            // A domain is valid when `postmaster@<domain>` is a valid address.
            Address::new("postmaster", &entry).map(|_| FilterEntry::Domain(entry.clone()))
        };
        let parsed = parsed.map_err(|_| FilterError {
            entry: raw.trim().to_string(),
        })?;
        if !entries.contains(&parsed) {
            entries.push(parsed);
        }
    }
    Ok(entries)
}

/// The canonical text of a filter: entries lower-cased, trimmed, joined by `,`.
pub fn format_from_filter(entries: &[FilterEntry]) -> String {
    entries
        .iter()
        .map(|e| match e {
            FilterEntry::Address(a) | FilterEntry::Domain(a) => a.as_str(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_and_bare_mailboxes() {
        let s = Sender::parse("\"Admin\" <admin@example.com>").unwrap();
        assert_eq!(s.name.as_deref(), Some("Admin"));
        assert_eq!(s.address, "admin@example.com");
        let s = Sender::parse("  admin@example.com ").unwrap();
        assert_eq!(s.name, None);
        assert_eq!(s.name_or_local_part(), "admin");
        let s = Sender::parse("Jérôme Dupont <J.Dupont@Example.COM>").unwrap();
        assert_eq!(s.name.as_deref(), Some("Jérôme Dupont"));
        assert_eq!(s.address, "J.Dupont@Example.COM");
        assert_eq!(s.normalized(), "j.dupont@example.com");
        assert_eq!(s.domain(), "example.com");
        let s = Sender::parse(r#""Dupont, \"JD\"" <jd@example.com>"#).unwrap();
        assert_eq!(s.name.as_deref(), Some(r#"Dupont, "JD""#));
    }

    #[test]
    fn rejects_malformed_mailboxes() {
        for bad in [
            "",
            "not an address",
            "Admin <admin@example.com",
            "admin@",
            "@example.com",
            "a b@example.com",
            "a@example.com, b@example.com",
            "a@example..com",
        ] {
            assert!(Sender::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn quotes_display_names() {
        assert_eq!(format_mailbox("Admin", "n@x.com"), "\"Admin\" <n@x.com>");
        assert_eq!(
            format_mailbox(r#"A "b" \c"#, "n@x.com"),
            r#""A \"b\" \\c" <n@x.com>"#
        );
        assert_eq!(
            format_mailbox("a\r\nBcc: x", "n@x.com"),
            "\"a  Bcc: x\" <n@x.com>"
        );
        // The quoted form parses back to the same name.
        let back = Sender::parse(&format_mailbox(r#"Dupont, "JD""#, "n@x.com")).unwrap();
        assert_eq!(back.name.as_deref(), Some(r#"Dupont, "JD""#));
    }

    #[test]
    fn parses_filters() {
        let f = parse_from_filter(" Example.com , Admin@Other.COM,,example.com").unwrap();
        assert_eq!(
            f,
            vec![
                FilterEntry::Domain("example.com".into()),
                FilterEntry::Address("admin@other.com".into())
            ]
        );
        assert_eq!(format_from_filter(&f), "example.com,admin@other.com");
        assert!(parse_from_filter("").unwrap().is_empty());
        for bad in [
            "exa mple.com",
            "@example.com",
            "a@",
            "example..com",
            "x@y@z.com",
        ] {
            let err = parse_from_filter(&format!("ok.com,{bad}")).unwrap_err();
            assert_eq!(err.entry, bad);
        }
    }
}
