//! What Microsoft 365 (Exchange Online) and Google Workspace (Gmail) answer when an account, a
//! tenant or an app is not set up for us, and what the administrator should change. The
//! texts are the providers' own (their documentation and real sessions); they are matched on
//! distinctive words and enhanced status codes, case- and whitespace-insensitively, in SMTP,
//! IMAP and POP3 errors alike. A reply we do not know gets the generic hint of its stage.

/// One known answer: every needle must occur in the error's text.
struct Known {
    needles: &'static [&'static str],
    hint: &'static str,
    /// The account's sending quota is used up: the server is backed off and its mail waits
    /// (a 550 that will be true until tomorrow is not a reason to fail the mail).
    quota: bool,
}

const fn known(needles: &'static [&'static str], hint: &'static str) -> Known {
    Known {
        needles,
        hint,
        quota: false,
    }
}

/// Most specific first: the first match wins.
const KNOWN: &[Known] = &[
    // Microsoft 365: "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is
    // disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information."
    known(
        &["smtpclientauthentication is disabled"],
        "Microsoft 365: SMTP AUTH is disabled for the tenant. Enable it for this mailbox (Microsoft 365 admin center → Users → Active users → the mailbox → Mail → Manage email apps → Authenticated SMTP), or better, switch the server to OAuth2 (docs/OPERATIONS.md, \"Microsoft 365\").",
    ),
    // "535 5.7.139 Authentication unsuccessful, basic authentication is disabled."
    known(
        &["basic authentication is disabled"],
        "Microsoft 365: password logins (basic authentication) are disabled for this tenant. Set the server up with OAuth2 (mail_gateway.set_oauth, docs/OPERATIONS.md, \"Microsoft 365\").",
    ),
    // "535 5.7.139 Authentication unsuccessful, the user credentials were incorrect."
    known(
        &["5.7.139", "credentials were incorrect"],
        "Microsoft 365: the username or password is wrong. username is the full mailbox address; a mailbox with multi-factor authentication needs OAuth2 (docs/OPERATIONS.md, \"Microsoft 365\").",
    ),
    // "535 5.7.139 Authentication unsuccessful, user is locked by your organization's
    // security defaults policy. Contact your administrator."
    known(
        &["security defaults policy"],
        "Microsoft 365: the tenant's security defaults block password logins. Use OAuth2 (docs/OPERATIONS.md, \"Microsoft 365\"), or have the tenant administrator turn security defaults off for this mailbox.",
    ),
    known(
        &["5.7.139"],
        "Microsoft 365 refused the login: check the mailbox address and password, that Authenticated SMTP is enabled for the mailbox, or switch to OAuth2 (docs/OPERATIONS.md, \"Microsoft 365\").",
    ),
    // "535 5.7.3 Authentication unsuccessful" (also what an OAuth2 token without the
    // SMTP.Send permission gets).
    known(
        &["5.7.3 authentication unsuccessful"],
        "Microsoft 365 refused the login: with a password, check it and that Authenticated SMTP is enabled for the mailbox; with OAuth2, that the app has the SMTP.Send permission and username is the mailbox the consent was given for.",
    ),
    // "530 5.7.57 Client not authenticated to send mail."
    known(
        &["5.7.57"],
        "Microsoft 365 takes mail only from a logged-in client: set auth and username/password (or OAuth2) on the server, with encryption starttls on port 587.",
    ),
    // "550 5.7.60 SMTP; Client does not have permissions to send as this sender" and
    // "554 5.2.252 SendAsDenied; … not allowed to send as …".
    known(
        &["sendasdenied"],
        "Microsoft 365: this mailbox may not send as the mail's From address. Grant it Send As on that address (Exchange admin center → Recipients → the address → Delegation), or narrow the server's from_filter so that such mail is sent from mail.default.from.",
    ),
    known(
        &["5.7.60"],
        "Microsoft 365: this mailbox may not send as the mail's From address. Grant it Send As on that address (Exchange admin center → Recipients → the address → Delegation), or narrow the server's from_filter so that such mail is sent from mail.default.from.",
    ),
    // "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException" and
    // "550 5.1.90 Your message can't be sent because you've reached your daily limit for
    // message recipients."
    Known {
        needles: &["submissionquotaexceeded"],
        hint: "Microsoft 365: the mailbox reached its sending limit (10,000 recipients a day, 30 messages a minute). Its mail waits and is sent when the server takes it again; lower mail.send.daily_limit, or send bulk mail through another server (mass_mailing.outgoing_mail_server).",
        quota: true,
    },
    Known {
        needles: &["5.1.90"],
        hint: "Microsoft 365: the mailbox reached its daily recipient limit. Its mail waits and is sent when the server takes it again; lower mail.send.daily_limit, or send bulk mail through another server (mass_mailing.outgoing_mail_server).",
        quota: true,
    },
    // Google: "534-5.7.9 Application-specific password required. Learn more at
    // https://support.google.com/mail/?p=InvalidSecondFactor", and over IMAP "NO [ALERT]
    // Application-specific password required: https://support.google.com/accounts/answer/185833".
    known(
        &["application-specific password required"],
        "Google: the account uses 2-Step Verification, so its own password cannot log in. Create an app password (Google Account → Security → App passwords) and put it in password, or better, switch the server to OAuth2 (docs/OPERATIONS.md, \"Google Workspace\").",
    ),
    // "534-5.7.14 <https://accounts.google.com/signin/continue?…> Please log in via your web
    // browser and then try again." and over IMAP "NO [ALERT] Please log in via your web browser".
    known(
        &["please log in via your web browser"],
        "Google blocked the sign-in as suspicious or from a less secure app. Use OAuth2 (docs/OPERATIONS.md, \"Google Workspace\") or an app password; signing in once from a browser on this network may lift the block.",
    ),
    // "535-5.7.8 Username and Password not accepted. For more information, go to
    // https://support.google.com/mail/?p=BadCredentials"
    known(
        &["5.7.8", "not accepted"],
        "Google: the username or password is wrong. username is the full address; with 2-Step Verification use an app password, or OAuth2 (docs/OPERATIONS.md, \"Google Workspace\").",
    ),
    // Over IMAP: "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)".
    known(
        &["authenticationfailed", "invalid credentials"],
        "The mailbox refused the username or password (Google answers this for a wrong or revoked password; with 2-Step Verification use an app password, or OAuth2: docs/OPERATIONS.md).",
    ),
    // "454 4.7.0 Too many login attempts, please try again later."
    known(
        &["too many login attempts"],
        "The provider paused logins after too many attempts: nothing to change if the credentials are right; the next attempt comes after mail_gateway.retry_delay. Fix wrong credentials first, or it starts again.",
    ),
    // Google: "550-5.4.5 Daily user sending limit exceeded. For more information on Gmail
    // sending limits go to https://support.google.com/a/answer/166852"
    Known {
        needles: &["5.4.5", "sending limit exceeded"],
        hint: "Google: the account reached its daily sending limit (2,000 messages a day for Workspace, 500 for Gmail). Its mail waits and is sent when the server takes it again; lower mail.send.daily_limit, or send bulk mail through another server (mass_mailing.outgoing_mail_server).",
        quota: true,
    },
    Known {
        needles: &["5.4.5", "daily"],
        hint: "The provider says the account reached its daily sending limit. Its mail waits and is sent when the server takes it again; lower mail.send.daily_limit, or send bulk mail through another server (mass_mailing.outgoing_mail_server).",
        quota: true,
    },
    // "550-5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail
    // requires all senders to authenticate with either SPF or DKIM."
    known(
        &["5.7.26"],
        "Gmail refused mail that fails SPF and DKIM for its From domain: publish the records mail_gateway.check_domain() lists for that domain (a DKIM key: create_dkim_key), or send it through a server allowed to send for the domain.",
    ),
];

fn normalized(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn find(text: &str) -> Option<&'static Known> {
    let text = normalized(text);
    KNOWN
        .iter()
        .find(|k| k.needles.iter().all(|n| text.contains(n)))
}

/// The hint for an error that carries a provider's answer we know.
pub fn hint(text: &str) -> Option<&'static str> {
    find(text).map(|k| k.hint)
}

/// Whether the answer says the account's sending quota is used up (the server is backed off
/// and its mail waits, like a 421).
pub fn quota_exhausted(text: &str) -> bool {
    find(text).is_some_and(|k| k.quota)
}

/// `text` with the hint added, when there is one: for `last_error`, `failure_reason` and the
/// views, where the administrator reads it.
pub fn with_hint(text: &str) -> String {
    match hint(text) {
        Some(hint) if !text.contains(hint) => format!("{text} (hint: {hint})"),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_providers_real_answers_get_their_hints() {
        let cases = [
            (
                "authentication refused: 535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [SN4PR0501CA0054.namprd05.prod.outlook.com]",
                "Authenticated SMTP",
            ),
            (
                "authentication refused: 535 5.7.139 Authentication unsuccessful, basic authentication is disabled. [BN9PR03CA0100.namprd03.prod.outlook.com]",
                "basic authentication",
            ),
            (
                "authentication refused: 535 5.7.139 Authentication unsuccessful, the user credentials were incorrect.",
                "username or password is wrong",
            ),
            (
                "authentication refused: 535 5.7.3 Authentication unsuccessful [AM0PR02CA0123.eurprd02.prod.outlook.com]",
                "SMTP.Send",
            ),
            (
                "sender refused: 554 5.2.252 SendAsDenied; sales@example.com not allowed to send as ceo@example.com; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied",
                "Send As",
            ),
            (
                "authentication refused: 534 5.7.9 Application-specific password required. Learn more at 5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor",
                "app password",
            ),
            (
                "login refused: NO [ALERT] Application-specific password required: https://support.google.com/accounts/answer/185833 (Failure)",
                "app password",
            ),
            (
                "authentication refused: 535 5.7.8 Username and Password not accepted. For more information, go to 5.7.8  https://support.google.com/mail/?p=BadCredentials",
                "username or password is wrong",
            ),
            (
                "login refused: NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)",
                "revoked password",
            ),
            (
                "recipient refused: 550 5.7.26 This mail has been blocked because the sender is unauthenticated.",
                "check_domain",
            ),
        ];
        for (text, expected) in cases {
            let hint = hint(text).unwrap_or_else(|| panic!("no hint for {text}"));
            assert!(hint.contains(expected), "{text}: {hint}");
            assert!(!quota_exhausted(text), "{text}");
        }
    }

    #[test]
    fn daily_quotas_are_pushback_not_failures() {
        for text in [
            "sender refused: 550 5.4.5 Daily user sending limit exceeded. For more information on Gmail 5.4.5 sending limits go to 5.4.5  https://support.google.com/a/answer/166852 - gsmtp",
            "message refused: 554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception",
            "recipient refused: 550 5.1.90 Your message can't be sent because you've reached your daily limit for message recipients.",
        ] {
            assert!(quota_exhausted(text), "{text}");
            assert!(with_hint(text).contains("(hint: "), "{text}");
        }
    }

    #[test]
    fn unknown_answers_stay_as_they_are() {
        let text = "recipient refused: 550 5.1.1 <nobody@example.com>: user unknown";
        assert_eq!(hint(text), None);
        assert!(!quota_exhausted(text));
        assert_eq!(with_hint(text), text);
    }
}
