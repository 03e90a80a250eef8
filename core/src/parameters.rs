//! The system parameters (table `parameter`, docs/REFERENCE.md, "Parameters" and docs/SECURITY.md) and their defaults,
//! in one place: the install script seeds the table from this list, `set_parameter` and the
//! table's trigger validate by its kinds, and every reader — the SQL functions and the workers
//! — reads a missing row (an administrator "unsetting" a value by deleting it) as its default.

/// What a parameter's value is, for validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Domain,
    LocalPart,
    /// A local part or a whole address.
    Sender,
    FromFilter,
    /// A whole number, 0 or more.
    Count,
    /// A whole number from 0 to 100.
    Percent,
    /// A PostgreSQL interval, positive.
    Interval,
    /// The name of an outgoing server.
    ServerName,
    /// Comma-separated authserv-ids (host names).
    AuthservIds,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Domain => "domain",
            Kind::LocalPart => "local_part",
            Kind::Sender => "sender",
            Kind::FromFilter => "from_filter",
            Kind::Count => "count",
            Kind::Percent => "percent",
            Kind::Interval => "interval",
            Kind::ServerName => "server_name",
            Kind::AuthservIds => "authserv_ids",
        }
    }
}

pub struct Parameter {
    pub key: &'static str,
    /// NULL (`None`) means "unset": the gateway then does without (no catchall domain, no
    /// dedicated mass-mailing server …). A parameter with a default cannot be set to NULL.
    pub default: Option<&'static str>,
    pub kind: Kind,
}

const fn p(key: &'static str, default: Option<&'static str>, kind: Kind) -> Parameter {
    Parameter { key, default, kind }
}

pub const PARAMETERS: [Parameter; 18] = [
    p("mail.catchall.domain", None, Kind::Domain),
    p("mail.catchall.alias", Some("catchall"), Kind::LocalPart),
    p("mail.bounce.alias", Some("bounce"), Kind::LocalPart),
    p("mail.default.from", Some("notifications"), Kind::Sender),
    p("mail.default.from_filter", None, Kind::FromFilter),
    p("mail.incoming.limit.period", Some("60"), Kind::Count),
    p("mail.incoming.limit.alias", Some("5"), Kind::Count),
    p("mail.send.daily_limit", Some("200"), Kind::Count),
    p("mail.bounce.limit", Some("5"), Kind::Count),
    p("mail.bounce.period", Some("30 days"), Kind::Interval),
    p("mail.bounce.spread", Some("7 days"), Kind::Interval),
    p("mail.fetch.interval", Some("5 minutes"), Kind::Interval),
    p("mass_mailing.outgoing_mail_server", None, Kind::ServerName),
    // What strangers can make us send (docs/SECURITY.md).
    p("mail.relay.limit.thread", Some("20"), Kind::Count),
    p("mail.relay.limit.sender", Some("10"), Kind::Count),
    p("mail.auto_reply.limit.recipient", Some("1"), Kind::Count),
    p("mail.auto_reply.daily_share", Some("10"), Kind::Percent),
    p(
        "mail.authentication.trusted_servers",
        None,
        Kind::AuthservIds,
    ),
];

pub fn find(key: &str) -> Option<&'static Parameter> {
    PARAMETERS.iter().find(|p| p.key == key)
}

/// The default of `key` (None for a key without one, or one the gateway does not read).
pub fn default_of(key: &str) -> Option<&'static str> {
    find(key).and_then(|p| p.default)
}

/// A number parameter as the gateway reads it: the stored value, else the default.
pub fn number(key: &str, stored: Option<&str>) -> i64 {
    stored
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| default_of(key).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_numbers_parse() {
        for (i, p) in PARAMETERS.iter().enumerate() {
            assert!(
                PARAMETERS[..i].iter().all(|q| q.key != p.key),
                "{} twice",
                p.key
            );
            if matches!(p.kind, Kind::Count | Kind::Percent) {
                assert!(p.default.unwrap().parse::<i64>().is_ok(), "{}", p.key);
            }
        }
        assert_eq!(number("mail.send.daily_limit", None), 200);
        assert_eq!(number("mail.send.daily_limit", Some(" 0 ")), 0);
        assert_eq!(number("mail.send.daily_limit", Some("x")), 200);
    }
}
