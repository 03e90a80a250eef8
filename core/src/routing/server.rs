//! Choosing the outgoing server and rewriting the From (docs/REFERENCE.md, "find_outgoing_server", the seeds' "FROM filter").

use super::address::{FilterEntry, Sender, format_mailbox};

/// An active outgoing server as the choice needs it.
#[derive(Debug, Clone)]
pub struct Server {
    pub id: i64,
    pub name: String,
    pub priority: i32,
    pub from_filter: Vec<FilterEntry>,
}

/// What the system parameters say about senders (docs/REFERENCE.md, "Parameters").
#[derive(Debug, Clone, Default)]
pub struct SenderSettings {
    /// The default sender address, when one can be derived.
    pub default_from: Option<String>,
    /// The local part used when a sender must be made up on a filter's domain.
    pub default_from_local: String,
    /// `mail.default.from_filter`: the effective filter of servers without their own.
    pub default_from_filter: Vec<FilterEntry>,
    /// `bounce@<catchall domain>`, when the domain is set.
    pub bounce_address: Option<String>,
    /// `mass_mailing.outgoing_mail_server`.
    pub mass_server: Option<String>,
}

impl SenderSettings {
    /// From the parameters (docs/REFERENCE.md, "Parameters"): the default sender is `mail.default.from` when it is
    /// a full address, else `mail.default.from@mail.catchall.domain`; the bounce address is
    /// `mail.bounce.alias@mail.catchall.domain`.
    pub fn from_parameters(
        catchall_domain: Option<String>,
        default_from: Option<String>,
        bounce_alias: Option<String>,
        default_from_filter: Vec<FilterEntry>,
        mass_server: Option<String>,
    ) -> SenderSettings {
        let default_from = default_from.unwrap_or_else(|| "notifications".to_string());
        let (default_from_local, default_from) = match default_from.split_once('@') {
            Some((local, _)) => (local.to_string(), Some(default_from.clone())),
            None => {
                let full = catchall_domain
                    .as_ref()
                    .map(|d| format!("{default_from}@{d}"));
                (default_from, full)
            }
        };
        let bounce_address = match (bounce_alias, &catchall_domain) {
            (Some(alias), Some(domain)) => Some(format!("{alias}@{domain}")),
            _ => None,
        };
        SenderSettings {
            default_from,
            default_from_local,
            default_from_filter,
            bounce_address,
            mass_server,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// `(id, name)` of the chosen server; `None` when no server is active.
    pub server: Option<(i64, String)>,
    /// Envelope sender (`MAIL FROM`, becomes Return-Path).
    pub smtp_from: String,
    /// The From header to send.
    pub header_from: String,
}

fn lists_address(filter: &[FilterEntry], address: &str) -> bool {
    filter
        .iter()
        .any(|e| matches!(e, FilterEntry::Address(a) if a == address))
}

fn lists_domain(filter: &[FilterEntry], domain: &str) -> bool {
    filter
        .iter()
        .any(|e| matches!(e, FilterEntry::Domain(d) if d == domain))
}

/// Whether a server with this effective filter may send as `address` (lower-case).
fn may_send_as(filter: &[FilterEntry], address: &str) -> bool {
    filter.is_empty()
        || lists_address(filter, address)
        || lists_domain(filter, super::address::domain_of(address))
}

/// Whether a server (its own filter, else the default one) sends mail for `domain`: it may send
/// as anyone, or its filter names the domain or an address of it.
pub fn sends_for_domain(
    filter: &[FilterEntry],
    default_filter: &[FilterEntry],
    domain: &str,
) -> bool {
    let effective = if filter.is_empty() {
        default_filter
    } else {
        filter
    };
    effective.is_empty()
        || effective.iter().any(|e| match e {
            FilterEntry::Domain(d) => d == domain,
            FilterEntry::Address(a) => super::address::domain_of(a) == domain,
        })
}

/// The server that sends a mail from `from` (docs/REFERENCE.md, "find_outgoing_server"), then its From and envelope.
/// `from_text` is the From as written; it is kept verbatim when the server may send as it.
pub fn choose(
    servers: &[Server],
    settings: &SenderSettings,
    from: &Sender,
    from_text: &str,
    mass: bool,
) -> Choice {
    let mut ordered: Vec<&Server> = servers.iter().collect();
    ordered.sort_by_key(|s| (s.priority, s.id));
    let address = from.normalized();
    let domain = from.domain();

    let first = |pred: &dyn Fn(&Server) -> bool| ordered.iter().copied().find(|s| pred(s));
    let dedicated = if mass {
        settings
            .mass_server
            .as_deref()
            .and_then(|name| first(&|s| s.name == name))
    } else {
        None
    };
    let default_from = settings.default_from.as_deref().map(str::to_lowercase);
    let chosen = dedicated
        .or_else(|| first(&|s| lists_address(&s.from_filter, &address)))
        .or_else(|| first(&|s| lists_domain(&s.from_filter, &domain)))
        .or_else(|| first(&|s| s.from_filter.is_empty()))
        .or_else(|| {
            let default = default_from.as_deref()?;
            first(&|s| lists_address(&s.from_filter, default)).or_else(|| {
                first(&|s| lists_domain(&s.from_filter, super::address::domain_of(default)))
            })
        })
        .or_else(|| ordered.first().copied());

    let filter: &[FilterEntry] = match chosen {
        Some(s) if !s.from_filter.is_empty() => &s.from_filter,
        _ => &settings.default_from_filter,
    };

    let (header_from, header_address) = if may_send_as(filter, &address) {
        (from_text.trim().to_string(), from.address.clone())
    } else {
        let sender = encapsulation_address(filter, settings);
        (format_mailbox(from.name_or_local_part(), &sender), sender)
    };
    let smtp_from = match &settings.bounce_address {
        Some(bounce) if may_send_as(filter, &bounce.to_lowercase()) => bounce.clone(),
        _ => header_address,
    };
    Choice {
        server: chosen.map(|s| (s.id, s.name.clone())),
        smtp_from,
        header_from,
    }
}

/// The address an author is encapsulated in: the default sender when the server may send as
/// it; else the filter's first full address; else the default local part on the filter's first
/// domain (a server limited to `other.com` sends as `notifications@other.com`).
fn encapsulation_address(filter: &[FilterEntry], settings: &SenderSettings) -> String {
    if let Some(default) = &settings.default_from
        && may_send_as(filter, &default.to_lowercase())
    {
        return default.clone();
    }
    let address = filter.iter().find_map(|e| match e {
        FilterEntry::Address(a) => Some(a.clone()),
        FilterEntry::Domain(_) => None,
    });
    let on_domain = || {
        filter.iter().find_map(|e| match e {
            FilterEntry::Domain(d) => Some(format!("{}@{d}", settings.default_from_local)),
            FilterEntry::Address(_) => None,
        })
    };
    address
        .or_else(on_domain)
        // Unreachable with a non-empty filter; an empty one lets every From through.
        .or_else(|| settings.default_from.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::address::parse_from_filter;

    fn server(id: i64, name: &str, priority: i32, filter: &str) -> Server {
        Server {
            id,
            name: name.into(),
            priority,
            from_filter: parse_from_filter(filter).unwrap(),
        }
    }

    fn settings() -> SenderSettings {
        SenderSettings {
            default_from: Some("notifications@mycompany.com".into()),
            default_from_local: "notifications".into(),
            default_from_filter: vec![],
            bounce_address: Some("bounce@mycompany.com".into()),
            mass_server: None,
        }
    }

    fn pick(servers: &[Server], settings: &SenderSettings, from: &str) -> Choice {
        choose(
            servers,
            settings,
            &Sender::parse(from).unwrap(),
            from,
            false,
        )
    }

    #[test]
    fn exact_address_beats_domain_beats_unfiltered() {
        let servers = vec![
            server(1, "any", 1, ""),
            server(2, "domain", 5, "example.com"),
            server(3, "exact", 20, "admin@example.com"),
        ];
        let s = settings();
        assert_eq!(
            pick(&servers, &s, "admin@example.com").server.unwrap().1,
            "exact"
        );
        assert_eq!(
            pick(&servers, &s, "Other <bob@EXAMPLE.com>")
                .server
                .unwrap()
                .1,
            "domain"
        );
        assert_eq!(
            pick(&servers, &s, "x@elsewhere.org").server.unwrap().1,
            "any"
        );
    }

    #[test]
    fn seeds_example_encapsulates_in_default_sender() {
        let servers = vec![server(1, "company", 10, "mycompany.com")];
        let c = pick(&servers, &settings(), "\"Admin\" <admin@example.com>");
        assert_eq!(c.server, Some((1, "company".into())));
        assert_eq!(c.header_from, "\"Admin\" <notifications@mycompany.com>");
        assert_eq!(c.smtp_from, "bounce@mycompany.com");
    }

    #[test]
    fn falls_back_to_default_sender_then_first_server() {
        let servers = vec![
            server(1, "a", 10, "a.com"),
            server(2, "b", 10, "mycompany.com"),
        ];
        assert_eq!(
            pick(&servers, &settings(), "x@z.org").server.unwrap().1,
            "b"
        );
        let servers = vec![server(7, "a", 10, "a.com"), server(3, "c", 10, "c.com")];
        let c = pick(&servers, &settings(), "x@z.org");
        // Tie in priority: the lowest id.
        assert_eq!(c.server.unwrap().1, "c");
        // c may not send as the default sender either: made up on its own domain.
        assert_eq!(c.header_from, "\"x\" <notifications@c.com>");
        assert_eq!(c.smtp_from, "notifications@c.com");
    }

    #[test]
    fn filter_equal_to_default_sender_encapsulates_everyone() {
        let servers = vec![server(1, "only", 10, "notifications@mycompany.com")];
        let c = pick(&servers, &settings(), "Bob <bob@mycompany.com>");
        assert_eq!(c.header_from, "\"Bob\" <notifications@mycompany.com>");
        // The bounce address is not in the filter: the envelope is the header address.
        assert_eq!(c.smtp_from, "notifications@mycompany.com");
        let c = pick(&servers, &settings(), "notifications@mycompany.com");
        assert_eq!(c.header_from, "notifications@mycompany.com");
    }

    #[test]
    fn default_from_filter_applies_to_unfiltered_servers() {
        let mut s = settings();
        s.default_from_filter = parse_from_filter("mycompany.com").unwrap();
        let servers = vec![server(1, "any", 10, "")];
        let c = pick(&servers, &s, "Jérôme <j@customer.example>");
        assert_eq!(c.header_from, "\"Jérôme\" <notifications@mycompany.com>");
        let c = pick(&servers, &s, "Me <me@MyCompany.com>");
        assert_eq!(c.header_from, "Me <me@MyCompany.com>");
        assert_eq!(c.smtp_from, "bounce@mycompany.com");
    }

    #[test]
    fn no_bounce_address_uses_header_address() {
        let mut s = settings();
        s.bounce_address = None;
        let c = pick(&[server(1, "any", 10, "")], &s, "A <a@x.com>");
        assert_eq!(c.smtp_from, "a@x.com");
    }

    #[test]
    fn mass_mail_uses_dedicated_server() {
        let servers = vec![server(1, "transactional", 1, ""), server(2, "bulk", 50, "")];
        let mut s = settings();
        s.mass_server = Some("bulk".into());
        let from = Sender::parse("a@mycompany.com").unwrap();
        assert_eq!(
            choose(&servers, &s, &from, "a@mycompany.com", true)
                .server
                .unwrap()
                .1,
            "bulk"
        );
        assert_eq!(
            choose(&servers, &s, &from, "a@mycompany.com", false)
                .server
                .unwrap()
                .1,
            "transactional"
        );
        s.mass_server = Some("gone".into());
        assert_eq!(
            choose(&servers, &s, &from, "a@mycompany.com", true)
                .server
                .unwrap()
                .1,
            "transactional"
        );
    }

    #[test]
    fn settings_follow_the_parameters() {
        let s = SenderSettings::from_parameters(
            Some("mycompany.com".into()),
            Some("notifications".into()),
            Some("bounce".into()),
            vec![],
            None,
        );
        assert_eq!(
            s.default_from.as_deref(),
            Some("notifications@mycompany.com")
        );
        assert_eq!(s.bounce_address.as_deref(), Some("bounce@mycompany.com"));
        let s = SenderSettings::from_parameters(
            None,
            Some("noreply@x.com".into()),
            Some("bounce".into()),
            vec![],
            None,
        );
        assert_eq!(s.default_from.as_deref(), Some("noreply@x.com"));
        assert_eq!(s.default_from_local, "noreply");
        assert_eq!(s.bounce_address, None);
        let s = SenderSettings::from_parameters(None, None, None, vec![], None);
        assert_eq!(s.default_from, None);
        assert_eq!(s.default_from_local, "notifications");
    }

    #[test]
    fn no_server_still_says_what_the_from_would_be() {
        let c = pick(&[], &settings(), "A <a@x.com>");
        assert_eq!(c.server, None);
        assert_eq!(c.header_from, "A <a@x.com>");
    }
}
