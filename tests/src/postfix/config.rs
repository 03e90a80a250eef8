//! The configuration of a test Postfix: the lines docs/OPERATIONS.md shows for routing the
//! company's domain to the gateway, and the rest of a test machine's instance.

use std::path::PathBuf;

/// main.cf: relay the company's domain through the transport map. `/etc/postfix` is this
/// instance's directory.
pub const ROUTING_MAIN_CF: &[&str] = &[
    "relay_domains = mycompany.com",
    "transport_maps = hash:/etc/postfix/transport",
];

/// main.cf for LMTP: one transaction per message whatever its recipients; no more sessions
/// than `mail_gateway.lmtp_max_connections` (10).
pub const LMTP_MAIN_CF: &[&str] = &[
    "lmtp_destination_recipient_limit = 1000",
    "lmtp_destination_concurrency_limit = 10",
];

/// The transport map's line for the LMTP listener (`mail_gateway.lmtp_listen`).
pub const LMTP_TRANSPORT: &str = "mycompany.com   lmtp:inet:127.0.0.1:2424";

/// master.cf: Postfix's own LMTP client (in Debian's master.cf already, chrooted there; either
/// works for an inet destination).
pub const LMTP_MASTER_CF: &[&str] =
    &["lmtp      unix  -       -       n       -       -       lmtp"];

/// main.cf for the pipe: one run per message whatever its recipients.
pub const PIPE_MAIN_CF: &[&str] = &["mailgateway_destination_recipient_limit = 1000"];

/// The transport map's line for the pipe.
pub const PIPE_TRANSPORT: &str = "mycompany.com   mailgateway:";

/// master.cf: `mail-gateway-deliver` through pipe(8), as a user of its own (pipe refuses root
/// and Postfix's own user), with a Return-Path (flag R) as a delivery agent writes it.
pub const PIPE_MASTER_CF: &[&str] = &[
    "mailgateway unix  -       n       n       -       10      pipe",
    "  flags=R user=mailgateway argv=/usr/lib/postgresql/15/bin/mail-gateway-deliver --timeout 60 { host=/var/run/postgresql dbname=erp user=mailgateway }",
];

/// The pipe's database role: nothing but `process_message` (peer authentication on the
/// socket: the role is pipe's user).
pub const PIPE_ROLE_SQL: &str = "CREATE ROLE mailgateway LOGIN;
GRANT USAGE ON SCHEMA mail_gateway TO mailgateway;
GRANT EXECUTE ON FUNCTION mail_gateway.process_message(bytea, text) TO mailgateway;";

/// Where mail for `mycompany.com` goes.
#[derive(Clone, Debug)]
pub enum Transport {
    /// The gateway's LMTP listener on 127.0.0.1 at this port.
    Lmtp(u16),
    /// `mail-gateway-deliver` (this program, copied into the instance so that pipe's user can
    /// run it wherever the checkout is) through pipe(8) as `nobody`, with this CONNINFO.
    Pipe { program: PathBuf, conninfo: String },
}

/// The rest of the instance: what a test machine needs and a production one has differently.
pub(super) const TEST_MAIN_CF: &str = "\
compatibility_level = 3.6
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.test.example
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
# Nothing leaves the test machine, and no daemon asks DNS.
default_transport = error:no mail leaves the test
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
# A held message is tried again within a second or two.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
";

/// Postfix's daemons, none chrooted (Debian chroots most; a test has no chroot to set up).
pub(super) const MASTER_CF: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";
