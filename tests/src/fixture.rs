//! The one way a test sets a gateway up: a cluster's settings, then the statements that follow
//! `CREATE EXTENSION mail_gateway`, in the order the builder's calls name them.
//!
//! ```ignore
//! let (cluster, mut db) = Gateway::new()
//!     .poll_interval("200ms")
//!     .smtp_timeout("5s")
//!     .catchall("mycompany.com")
//!     .no_daily_limit()
//!     .relay(smtp.port)
//!     .start();
//! ```

use std::net::TcpStream;
use std::time::Duration;

use crate::{Client, Cluster, exec, wait_for};

/// A gateway to start: see the module's documentation.
#[must_use = "nothing happens until `start` or `install`"]
pub struct Gateway {
    preload: bool,
    settings: Vec<(String, String)>,
    setup: Vec<String>,
    lmtp_port: Option<u16>,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway::new()
    }
}

impl Gateway {
    /// The library preloaded, every setting and parameter at its default.
    pub fn new() -> Gateway {
        Gateway {
            preload: true,
            settings: Vec::new(),
            setup: Vec::new(),
            lmtp_port: None,
        }
    }

    /// What most tests start from: workers polling every 200 ms, SMTP and fetch timeouts of
    /// 5 s, the alias domain `mycompany.com` and no daily limit.
    pub fn usual() -> Gateway {
        Gateway::new()
            .poll_interval("200ms")
            .smtp_timeout("5s")
            .fetch_timeout("5s")
            .catchall("mycompany.com")
            .no_daily_limit()
    }

    /// Set up to send: the alias domain `mycompany.com`, no daily limit, and the outgoing server
    /// `relay` at 127.0.0.1:`port` without encryption.
    pub fn sending_through(port: u16) -> Gateway {
        Gateway::new()
            .catchall("mycompany.com")
            .no_daily_limit()
            .relay(port)
    }

    /// No worker: the library is not preloaded, only the SQL API runs.
    pub fn without_preload(mut self) -> Self {
        self.preload = false;
        self
    }

    /// A `name = value` line of postgresql.conf; of two lines for one name, the later wins.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_string(), value.to_string()));
        self
    }

    /// Several [`setting`](Self::setting)s, in order.
    pub fn settings(self, settings: &[(&str, &str)]) -> Self {
        settings
            .iter()
            .fold(self, |gateway, (name, value)| gateway.setting(name, value))
    }

    pub fn poll_interval(self, interval: &str) -> Self {
        self.setting("mail_gateway.poll_interval", interval)
    }

    pub fn smtp_timeout(self, timeout: &str) -> Self {
        self.setting("mail_gateway.smtp_timeout", timeout)
    }

    pub fn fetch_timeout(self, timeout: &str) -> Self {
        self.setting("mail_gateway.fetch_timeout", timeout)
    }

    /// The fetcher listens for LMTP on 127.0.0.1:`port`; `start` returns once it accepts
    /// connections.
    pub fn lmtp_listener(mut self, port: u16) -> Self {
        self.lmtp_port = Some(port);
        self.setting("mail_gateway.lmtp_listen", &format!("127.0.0.1:{port}"))
    }

    /// Runs `sql` after what the earlier calls set up (in the same transaction).
    pub fn sql(mut self, sql: &str) -> Self {
        self.setup
            .push(sql.trim().trim_end_matches(';').to_string());
        self
    }

    /// The extension's parameter `key` (`mail_gateway.set_parameter`).
    pub fn parameter(self, key: &str, value: &str) -> Self {
        self.sql(&format!(
            "SELECT mail_gateway.set_parameter('{key}', '{value}')"
        ))
    }

    /// The domain of the ERP's own addresses (`mail.catchall.domain`).
    pub fn catchall(self, domain: &str) -> Self {
        self.parameter("mail.catchall.domain", domain)
    }

    /// No daily sending limit (`mail.send.daily_limit` 0).
    pub fn no_daily_limit(self) -> Self {
        self.parameter("mail.send.daily_limit", "0")
    }

    /// An outgoing server `relay` at 127.0.0.1:`port`, without encryption.
    pub fn relay(self, port: u16) -> Self {
        self.sql(&format!(
            "INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption)
                 VALUES ('relay', '127.0.0.1', {port}, 'none')"
        ))
    }

    /// Creates the extension in `db` and runs what the builder names, in one batch.
    pub fn install(&self, db: &mut Client) {
        let mut sql = String::from("CREATE EXTENSION mail_gateway");
        for statement in &self.setup {
            sql.push_str(";\n");
            sql.push_str(statement);
        }
        exec(db, &sql);
    }

    /// Starts the cluster and installs the gateway in its database `postgres`.
    pub fn start(self) -> (Cluster, Client) {
        let settings: Vec<(&str, &str)> = self
            .settings
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let cluster = Cluster::start_with(self.preload, &settings);
        let mut db = cluster.connect("postgres");
        self.install(&mut db);
        if let Some(port) = self.lmtp_port {
            wait_for_lmtp_listener(port);
        }
        (cluster, db)
    }
}

/// Posts quotation SO042 on `sale_order` #42, from Ann; returns its Message-ID (what a reply
/// answers).
pub fn post_quotation(db: &mut Client) -> String {
    exec(
        db,
        "SELECT mail_gateway.post_message('sale_order', 42, 'Ann <ann@mycompany.com>',
             'Your quotation SO042 is ready.', 'Quotation SO042')",
    );
    db.query_one(
        "SELECT message_id FROM mail_gateway.message WHERE model = 'sale_order' AND res_id = 42",
        &[],
    )
    .unwrap()
    .get(0)
}

/// Mail to sales@ creates a lead (a thread of its own): the table `crm_lead`, the alias `sales`.
pub fn with_sales_alias(db: &mut Client) {
    exec(
        db,
        "CREATE TABLE crm_lead (id bigserial PRIMARY KEY, name text, email_from text, description text);
         INSERT INTO mail_gateway.alias (name, model) VALUES ('sales', 'crm_lead');",
    );
}

/// Waits until the fetcher's LMTP listener on 127.0.0.1:`port` accepts connections.
pub fn wait_for_lmtp_listener(port: u16) {
    wait_for("the LMTP listener", Duration::from_secs(60), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
}
