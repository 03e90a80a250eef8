//! Where bounces come from: a mailer daemon, or a null envelope sender.

use mail_parser::Message;

use super::{header, lower};

/// Sent with a null envelope sender (`Return-Path: <>`), as bounces and RFC 3834 answers are.
/// The topmost Return-Path is the one the delivery agent wrote (the LMTP listener, Dovecot,
/// Postfix's pipe); a sender may write their own further down, and that one says nothing.
pub(super) fn null_sender(message: &Message<'_>) -> bool {
    message
        .headers_raw()
        .find(|(name, _)| name.eq_ignore_ascii_case("Return-Path"))
        .is_some_and(|(_, value)| value.trim() == "<>")
}

/// Senders that write bounces.
pub(super) fn from_mailer(message: &Message<'_>) -> bool {
    let address = from_address(message);
    let name = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.name())
        .map(lower)
        .unwrap_or_default();
    let local = address.split('@').next().unwrap_or_default();
    address.is_empty()
        && header(message, "From").is_some_and(|f| lower(f).contains("mailer-daemon"))
        || [
            "mailer-daemon",
            "postmaster",
            "mail-daemon",
            "mailerdaemon",
            "mdaemon",
        ]
        .iter()
        .any(|m| local.starts_with(m))
        || name.contains("mail delivery")
        || name.contains("mailer-daemon")
        || name.contains("mail administrator")
}

/// The first address of `From`, lower-case; empty without one.
pub(super) fn from_address(message: &Message<'_>) -> String {
    message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(lower)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::{Kind, analyse};

    /// The delivery agent's Return-Path is the topmost; one a sender wrote lower down is theirs.
    #[test]
    fn only_the_topmost_return_path_says_null_sender() {
        let away = |header: &str| {
            format!(
                "{header}From: dan@customer.example\r\nSubject: Out of office\r\n\r\nBack on Monday.\r\n"
            )
        };
        let parse = |raw: &str| analyse(raw.as_bytes()).kind;
        assert_eq!(
            parse(&away(
                "Return-Path: <>\r\nReturn-Path: <dan@customer.example>\r\n"
            )),
            Kind::AutoReply
        );
        assert_ne!(
            parse(&away(
                "Return-Path: <dan@customer.example>\r\nReturn-Path: <>\r\n"
            )),
            Kind::AutoReply
        );
    }
}
