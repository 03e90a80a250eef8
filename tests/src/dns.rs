//! A real DNS server (dnslib, Debian's python3-dnslib) on 127.0.0.1 answering from zones the
//! test gives, UDP and TCP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::{free_port, temp_dir};

pub struct DnsServer {
    pub port: u16,
    child: Child,
    dir: std::path::PathBuf,
}

impl DnsServer {
    /// `zones`: `{"name": {"TXT": [..], "MX": [[10, "host"]], "A": [..]}}`.
    pub fn start(zones: &serde_json::Value) -> DnsServer {
        let dir = temp_dir("mgdns");
        let file = dir.join("zones.json");
        std::fs::write(&file, zones.to_string()).unwrap();
        let port = free_port();
        let mut child = Command::new("/usr/bin/python3")
            .arg(crate::smtp::servers_dir().join("dns_server.py"))
            .arg(port.to_string())
            .arg(&file)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with dnslib");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "READY", "the DNS server did not start");
        DnsServer { port, child, dir }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
