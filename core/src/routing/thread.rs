//! Threads and their mail, pure: the headers that tie a notification to its thread, the
//! Message-IDs a reply is matched by, the From of relayed mail, the tracking token in the bounce
//! address, and the tag that marks our own automatic notices.

use super::address::{Sender, format_mailbox};

/// References kept on a notification: the thread's first message and its latest ones.
const REFERENCES_KEPT: usize = 10;

/// Reply matching looks at In-Reply-To, then at most this many References, newest first.
pub const REFERENCES_LOOKED_AT: usize = 32;

/// Local part prefix of the Message-ID of our automatic notices (answers, loop notices):
/// a reply that references one is a loop.
pub const LOOP_TAG: &str = "mg-loop-";

/// `In-Reply-To` and `References` for a new message in a thread whose earlier Message-IDs are
/// `thread` (oldest first).
pub fn thread_headers(thread: &[String]) -> Option<(String, String)> {
    let last = thread.last()?;
    let mut kept: Vec<&String> = Vec::with_capacity(REFERENCES_KEPT);
    kept.push(&thread[0]);
    let tail_start = thread.len().saturating_sub(REFERENCES_KEPT - 1).max(1);
    kept.extend(&thread[tail_start..]);
    let references = kept
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    Some((last.clone(), references))
}

/// The Message-IDs a received message may answer, in the order they are tried: In-Reply-To,
/// then References newest first; at most `REFERENCES_LOOKED_AT + 1`, however many a hostile
/// message lists (each one is a lookup).
pub fn reply_candidates(in_reply_to: &[String], references: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let newest_first = references.iter().rev();
    for id in in_reply_to.iter().chain(newest_first) {
        if out.len() > REFERENCES_LOOKED_AT {
            break;
        }
        if !out.contains(id) {
            out.push(id.clone());
        }
    }
    out
}

/// Whether a received message answers one of our automatic notices.
pub fn answers_a_loop_notice(in_reply_to: &[String], references: &[String]) -> bool {
    in_reply_to
        .iter()
        .chain(references)
        .any(|id| id.trim_start_matches('<').starts_with(LOOP_TAG))
}

/// The From of mail written by `author`: as is when the author writes from our own domain,
/// else the default sender's address with the author's name ("Ann (via MyCompany)" is left to
/// the ERP), so that the author's domain's DMARC policy cannot reject it. An author who is not
/// `verified` (a received message claiming one of our domains without passing authentication)
/// never keeps our From, and the name says so.
pub fn notification_from(
    author: &Sender,
    own_domain: Option<&str>,
    default_from: &str,
    verified: bool,
) -> String {
    if !verified {
        let name = format!("{} (unverified)", author.name_or_local_part());
        return format_mailbox(&name, default_from);
    }
    if own_domain.is_some_and(|d| author.domain() == d) {
        match &author.name {
            Some(name) => format_mailbox(name, &author.address),
            None => author.address.clone(),
        }
    } else {
        format_mailbox(author.name_or_local_part(), default_from)
    }
}

/// `bounce+<mail id>-<check>@domain`: the envelope sender of mail `id`, so that a bounce names
/// its mail whatever the reporting MTA writes. `check` (from the mail's random Message-ID)
/// keeps others from forging bounces for our mail.
pub fn tagged_bounce_address(bounce_address: &str, mail_id: i64, check: &str) -> String {
    match bounce_address.split_once('@') {
        Some((local, domain)) => format!("{local}+{mail_id}-{check}@{domain}"),
        None => bounce_address.to_string(),
    }
}

/// The envelope sender a mail goes out with: empty for our automatic answers (RFC 3834: no
/// bounce may come back), the tagged bounce address when the server may use the bounce
/// address, else the chosen one.
pub fn envelope_sender(
    chosen: &str,
    bounce_address: Option<&str>,
    automatic: bool,
    mail_id: i64,
    message_id: &str,
) -> String {
    if automatic {
        return String::new();
    }
    match bounce_address {
        Some(bounce) if bounce.eq_ignore_ascii_case(chosen) => {
            tagged_bounce_address(bounce, mail_id, &bounce_check(message_id))
        }
        _ => chosen.to_string(),
    }
}

/// The mail id and check of a tagged bounce address whose local part is `bounce_local`.
pub fn parse_tagged_bounce(address: &str, bounce_local: &str) -> Option<(i64, String)> {
    let (local, _) = address.split_once('@')?;
    let tag = local
        .to_lowercase()
        .strip_prefix(&format!("{}+", bounce_local.to_lowercase()))?
        .to_string();
    let (id, check) = tag.split_once('-')?;
    Some((id.parse().ok()?, check.to_string()))
}

/// The check of a mail: the first 8 characters of its Message-ID's random part.
pub fn bounce_check(message_id: &str) -> String {
    message_id
        .trim_start_matches('<')
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect::<String>()
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("<{i}@x>")).collect()
    }

    #[test]
    fn headers_keep_the_root_and_the_latest() {
        assert_eq!(thread_headers(&[]), None);
        assert_eq!(
            thread_headers(&ids(2)),
            Some(("<2@x>".into(), "<1@x> <2@x>".into()))
        );
        let (reply_to, references) = thread_headers(&ids(30)).unwrap();
        assert_eq!(reply_to, "<30@x>");
        let kept: Vec<&str> = references.split(' ').collect();
        assert_eq!(kept.len(), 10);
        assert_eq!((kept[0], kept[1], kept[9]), ("<1@x>", "<22@x>", "<30@x>"));
    }

    #[test]
    fn candidates_are_in_reply_to_then_newest_references() {
        let refs = ids(40);
        let c = reply_candidates(&["<7@x>".into()], &refs);
        assert_eq!(c[0], "<7@x>");
        assert_eq!(c[1], "<40@x>");
        assert_eq!(c.len(), 1 + REFERENCES_LOOKED_AT);
        assert!(
            !c.contains(&"<8@x>".to_string()),
            "older references are not looked at"
        );
    }

    #[test]
    fn a_hostile_in_reply_to_cannot_make_thousands_of_lookups() {
        let c = reply_candidates(&ids(5000), &ids(5000));
        assert_eq!(c.len(), 1 + REFERENCES_LOOKED_AT);
        assert_eq!(c[0], "<1@x>");
    }

    #[test]
    fn outside_authors_are_encapsulated() {
        let ann = Sender::parse("Ann Smith <ann@customer.example>").unwrap();
        assert_eq!(
            notification_from(
                &ann,
                Some("mycompany.com"),
                "notifications@mycompany.com",
                true
            ),
            "\"Ann Smith\" <notifications@mycompany.com>"
        );
        let bob = Sender::parse("bob@mycompany.com").unwrap();
        assert_eq!(
            notification_from(
                &bob,
                Some("mycompany.com"),
                "notifications@mycompany.com",
                true
            ),
            "bob@mycompany.com"
        );
    }

    #[test]
    fn an_unverified_colleague_is_encapsulated_and_marked() {
        let ceo = Sender::parse("\"The CEO\" <ceo@mycompany.com>").unwrap();
        assert_eq!(
            notification_from(
                &ceo,
                Some("mycompany.com"),
                "notifications@mycompany.com",
                false
            ),
            "\"The CEO (unverified)\" <notifications@mycompany.com>"
        );
    }

    #[test]
    fn bounce_addresses_carry_the_mail() {
        let a = tagged_bounce_address("bounce@mycompany.com", 42, "a1b2c3d4");
        assert_eq!(a, "bounce+42-a1b2c3d4@mycompany.com");
        assert_eq!(
            parse_tagged_bounce(&a, "bounce"),
            Some((42, "a1b2c3d4".into()))
        );
        assert_eq!(parse_tagged_bounce("bounce@mycompany.com", "bounce"), None);
        assert_eq!(
            parse_tagged_bounce("sales+1-x@mycompany.com", "bounce"),
            None
        );
        assert_eq!(bounce_check("<A1B2C3D4e5@mycompany.com>"), "a1b2c3d4");
    }

    #[test]
    fn the_envelope_tracks_the_mail() {
        let b = Some("bounce@mycompany.com");
        assert_eq!(
            envelope_sender("bounce@mycompany.com", b, false, 7, "<ab12cd34ef@x>"),
            "bounce+7-ab12cd34@mycompany.com"
        );
        assert_eq!(
            envelope_sender("ann@other.example", b, false, 7, "<ab12@x>"),
            "ann@other.example"
        );
        assert_eq!(
            envelope_sender("bounce@mycompany.com", b, true, 7, "<ab12@x>"),
            ""
        );
    }

    #[test]
    fn loop_notices_are_recognised() {
        assert!(answers_a_loop_notice(
            &[],
            &["<mg-loop-abc@mycompany.com>".into()]
        ));
        assert!(!answers_a_loop_notice(&["<abc@mycompany.com>".into()], &[]));
    }
}
