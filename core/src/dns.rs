//! DNS lookups for `check_domain`: hickory's resolver (the one mail-auth uses), pointed at the
//! system's resolvers or at `mail_gateway.dns_server`, run on a small runtime of its own.
//! "No such name" and "no record" are empty answers, not errors. It knows nothing of PostgreSQL.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::net::NetError;
use mail_auth::hickory_resolver::proto::rr::RData;
use mail_auth::hickory_resolver::{TokioResolver, net::runtime::TokioRuntimeProvider};

/// What went wrong with DNS: the client could not start, or a lookup failed (no such name and
/// no record are empty answers, not errors).
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot start the DNS client: {0}")]
    Start(String),
    #[error("mail_gateway.dns_server \"{0}\" is not an ip:port address")]
    BadServer(String),
    #[error("cannot read the system's DNS configuration: {0}")]
    SystemConfig(String),
    #[error("DNS lookup of {name} failed: {source}")]
    Lookup { name: String, source: NetError },
}

/// What `check_domain` asks of DNS (a trait, so the checks are tested without a network).
pub trait Lookup {
    /// TXT records of `name`, each one's strings joined.
    fn txt(&self, name: &str) -> Result<Vec<String>, DnsError>;
    /// `(preference, exchange)` of the MX records of `name`.
    fn mx(&self, name: &str) -> Result<Vec<(u16, String)>, DnsError>;
    /// IPv4 and IPv6 addresses of `name`.
    fn ips(&self, name: &str) -> Result<Vec<IpAddr>, DnsError>;
}

pub struct Dns {
    runtime: tokio::runtime::Runtime,
    resolver: TokioResolver,
}

impl Dns {
    /// The system's resolvers, or `server` (`host:port`, an IP address) when given.
    pub fn new(server: Option<&str>, timeout: Duration) -> Result<Dns, DnsError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DnsError::Start(e.to_string()))?;
        let mut options = ResolverOpts::default();
        options.timeout = timeout;
        options.attempts = 2;
        options.cache_size = 256;
        let config = match server {
            Some(server) => {
                let address: SocketAddr = server
                    .parse()
                    .map_err(|_| DnsError::BadServer(server.to_string()))?;
                let mut udp = ConnectionConfig::new(ProtocolConfig::Udp);
                udp.port = address.port();
                let mut tcp = ConnectionConfig::new(ProtocolConfig::Tcp);
                tcp.port = address.port();
                let mut name_server = NameServerConfig::udp_and_tcp(address.ip());
                name_server.connections = vec![udp, tcp];
                ResolverConfig::from_parts(None, vec![], vec![name_server])
            }
            None => {
                let (config, system) = mail_auth::hickory_resolver::system_conf::read_system_conf()
                    .map_err(|e| DnsError::SystemConfig(e.to_string()))?;
                options.ndots = system.ndots;
                config
            }
        };
        let resolver = {
            let _guard = runtime.enter();
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(options)
                .build()
                .map_err(|e| DnsError::Start(e.to_string()))?
        };
        Ok(Dns { runtime, resolver })
    }

    /// The resolver itself (mail-auth's checks take it).
    pub fn resolver(&self) -> &TokioResolver {
        &self.resolver
    }

    /// Runs a lookup (or any future) to its end on this client's runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    fn records(
        &self,
        result: Result<mail_auth::hickory_resolver::lookup::Lookup, NetError>,
        name: &str,
    ) -> Result<Vec<RData>, DnsError> {
        match result {
            Ok(lookup) => Ok(lookup.answers().iter().map(|r| r.data.clone()).collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(vec![]),
            Err(source) => Err(DnsError::Lookup {
                name: name.to_string(),
                source,
            }),
        }
    }
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

impl Lookup for Dns {
    fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let result = self.runtime.block_on(self.resolver.txt_lookup(fqdn(name)));
        Ok(self
            .records(result, name)?
            .into_iter()
            .filter_map(|r| match r {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|part| String::from_utf8_lossy(part).into_owned())
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect())
    }

    fn mx(&self, name: &str) -> Result<Vec<(u16, String)>, DnsError> {
        let result = self.runtime.block_on(self.resolver.mx_lookup(fqdn(name)));
        Ok(self
            .records(result, name)?
            .into_iter()
            .filter_map(|r| match r {
                RData::MX(mx) => Some((
                    mx.preference,
                    mx.exchange.to_utf8().trim_end_matches('.').to_lowercase(),
                )),
                _ => None,
            })
            .collect())
    }

    fn ips(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let mut out = Vec::new();
        let v4 = self.runtime.block_on(self.resolver.ipv4_lookup(fqdn(name)));
        for r in self.records(v4, name)? {
            if let RData::A(a) = r {
                out.push(IpAddr::V4(a.0));
            }
        }
        let v6 = self.runtime.block_on(self.resolver.ipv6_lookup(fqdn(name)));
        for r in self.records(v6, name)? {
            if let RData::AAAA(a) = r {
                out.push(IpAddr::V6(a.0));
            }
        }
        Ok(out)
    }
}
