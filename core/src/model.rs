//! The states and kinds the schema stores as text (sql/*.sql, their CHECK constraints), as
//! enums: code compares and writes these, never string literals. Each value's text is the
//! one the schema uses; a unit test holds the two lists equal.

use std::fmt;
use std::str::FromStr;

/// A value of a text column limited to a fixed list (a CHECK constraint).
pub trait Column: Copy + 'static {
    /// Every value, in the order of the CHECK constraint.
    const ALL: &'static [Self];
    /// The text stored in the column.
    fn as_str(self) -> &'static str;
}

/// A text that is none of the column's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    pub column: &'static str,
    pub value: String,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} \"{}\"", self.column, self.value)
    }
}

impl std::error::Error for UnknownValue {}

/// Makes an enum a column's: `Column` (its values and their texts), `FromStr` and `Display`.
macro_rules! column_impls {
    ($name:ty, $column:literal { $($variant:ident = $text:literal),+ $(,)? }) => {
        impl Column for $name {
            const ALL: &'static [Self] = &[$(<$name>::$variant),+];
            fn as_str(self) -> &'static str {
                match self {
                    $(<$name>::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(text: &str) -> Result<Self, UnknownValue> {
                match text {
                    $($text => Ok(<$name>::$variant),)+
                    _ => Err(UnknownValue { column: $column, value: text.to_string() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(Column::as_str(*self))
            }
        }
    };
}

/// Declares a column's enum: its values and their texts, with `as_str` of its own (callers
/// need not import `Column`) and `column_impls`.
macro_rules! column_enum {
    ($(#[$doc:meta])* $name:ident, $column:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                Column::as_str(self)
            }
        }

        column_impls!($name, $column { $($variant = $text),+ });
    };
}

column_enum! {
    /// `mail.state`: where an outgoing mail is (docs/REFERENCE.md, "States").
    MailState, "mail state" {
        Outgoing = "outgoing",
        Sending = "sending",
        Sent = "sent",
        Exception = "exception",
        Cancel = "cancel",
    }
}

column_enum! {
    /// `mail.kind`: what the server choice and the envelope sender depend on.
    MailKind, "mail kind" {
        Transactional = "transactional",
        /// Prefers the dedicated mass-mailing servers.
        Mass = "mass",
        /// An automatic answer: sent with an empty envelope sender.
        AutoReply = "auto_reply",
    }
}

column_enum! {
    /// `message.kind`: a chatter message.
    MessageKind, "message kind" {
        Comment = "comment",
        Email = "email",
        Notification = "notification",
    }
}

column_enum! {
    /// `oauth_account.state`: whether a refresh can get a token.
    OAuthState, "OAuth account state" {
        Ok = "ok",
        /// A person must sign in and consent (again).
        NeedsConsent = "needs_consent",
        /// An administrator must fix the account.
        Misconfigured = "misconfigured",
    }
}

// `oauth_account.provider`.
column_impls!(crate::oauth::Provider, "OAuth provider" {
    Microsoft = "microsoft",
    Google = "google",
    Custom = "custom",
});

// `incoming_server.protocol`.
column_impls!(crate::mailbox::Protocol, "incoming protocol" {
    Imap = "imap",
    Pop3 = "pop3",
});

column_enum! {
    /// `incoming_server.auth`: how the fetcher logs in.
    IncomingAuth, "incoming auth" {
        Password = "password",
        /// With the OAuth2 account's access token.
        Xoauth2 = "xoauth2",
    }
}

column_enum! {
    /// `incoming_server.state`: only confirmed servers are fetched.
    IncomingState, "incoming server state" {
        Draft = "draft",
        Confirmed = "confirmed",
    }
}

// `outgoing_server.auth`.
column_impls!(crate::smtp::Auth, "outgoing auth" {
    None = "none",
    Login = "login",
    Certificate = "certificate",
    Xoauth2 = "xoauth2",
});

// `inbound.auth_verdict`: what the received mail's authentication says of its From.
column_impls!(crate::authentication::Verdict, "authentication verdict" {
    Pass = "pass",
    Fail = "fail",
    None = "none",
});

column_enum! {
    /// `mail.failure_type`: why a mail failed (no CHECK constraint: free text to SQL, these to
    /// us). `delivery` writes the SMTP ones.
    FailureType, "failure type" {
        /// No active server accepts the From.
        NoServer = "no_server",
        /// The server's port is one the gateway refuses.
        BlockedPort = "blocked_port",
        /// The message could not be built.
        Build = "build",
        /// A bug met on the way.
        Internal = "internal",
        Connection = "connection",
        Tls = "tls",
        Auth = "auth",
        SenderRefused = "sender_refused",
        RecipientRefused = "recipient_refused",
        /// Some recipients were deferred until they expired.
        RecipientDeferred = "recipient_deferred",
        MessageRefused = "message_refused",
        /// Retried for two days without success.
        RetryExpired = "retry_expired",
        /// Some recipients got it, others refused.
        Partial = "partial",
        Blacklisted = "blacklisted",
    }
}

// `outgoing_server.encryption` and `incoming_server.encryption`.
column_impls!(crate::net::Encryption, "encryption" {
    None = "none",
    StartTls = "starttls",
    Ssl = "ssl",
});

// `inbound.state`: where routing left a received message.
column_impls!(crate::routing::route::State, "inbound state" {
    New = "new",
    Routed = "routed",
    Duplicate = "duplicate",
    Bounce = "bounce",
    Complaint = "complaint",
    Loop = "loop",
    Rejected = "rejected",
    Unroutable = "unroutable",
    Error = "error",
});

// `dkim_key.algorithm`, also the `k=` of the DNS record.
column_impls!(crate::dkim::Algorithm, "DKIM algorithm" {
    Rsa = "rsa",
    Ed25519 = "ed25519",
});

column_enum! {
    /// `alias.contact_policy`: who may write to an alias.
    ContactPolicy, "contact policy" {
        Everyone = "everyone",
        /// Known contacts only.
        Partners = "partners",
        /// Followers of the alias's forced thread only.
        Followers = "followers",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: [&str; 4] = [
        include_str!("../../sql/bootstrap.sql"),
        include_str!("../../sql/queue.sql"),
        include_str!("../../sql/inbound.sql"),
        include_str!("../../sql/chatter.sql"),
    ];

    /// The quoted values of `CONSTRAINT <name> CHECK (<column> IN ('a', 'b', …))`.
    fn check_values(constraint: &str) -> Vec<String> {
        let marker = format!("CONSTRAINT {constraint} CHECK (");
        let sql = SCHEMA
            .iter()
            .find(|sql| sql.contains(&marker))
            .unwrap_or_else(|| panic!("no constraint {constraint} in sql/*.sql"));
        let after = &sql[sql.find(&marker).unwrap() + marker.len()..];
        let list = &after[after.find(" IN (").expect("an IN list") + 5..];
        let list = &list[..list.find(')').expect("a closing parenthesis")];
        list.split(',')
            .map(|v| v.trim().trim_matches('\'').to_string())
            .collect()
    }

    fn texts<T: Column>() -> Vec<String> {
        T::ALL.iter().map(|v| v.as_str().to_string()).collect()
    }

    /// Each enum has exactly the values its CHECK constraint allows, and reads its own text back.
    #[test]
    fn enums_match_the_check_constraints() {
        fn same<T: Column + FromStr + PartialEq + fmt::Debug>(constraint: &str) {
            assert_eq!(texts::<T>(), check_values(constraint), "{constraint}");
            for v in T::ALL {
                assert_eq!(v.as_str().parse::<T>().ok().as_ref(), Some(v));
            }
        }
        same::<MailState>("mail_state_check");
        same::<MailKind>("mail_kind_check");
        same::<MessageKind>("message_kind_check");
        same::<OAuthState>("oauth_account_state_check");
        same::<crate::oauth::Provider>("oauth_account_provider_check");
        same::<crate::mailbox::Protocol>("incoming_server_protocol_check");
        same::<IncomingAuth>("incoming_server_auth_check");
        same::<IncomingState>("incoming_server_state_check");
        same::<crate::smtp::Auth>("outgoing_server_auth_check");
        same::<crate::authentication::Verdict>("inbound_auth_verdict_check");
        same::<crate::net::Encryption>("outgoing_server_encryption_check");
        same::<crate::net::Encryption>("incoming_server_encryption_check");
        same::<crate::routing::route::State>("inbound_state_check");
        same::<crate::dkim::Algorithm>("dkim_key_algorithm_check");
        same::<ContactPolicy>("alias_contact_policy_check");
    }
}
