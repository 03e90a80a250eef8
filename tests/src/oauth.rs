//! A local OAuth2 provider (`tests/servers/oauth2_endpoint.py`): the token endpoint the
//! gateway refreshes at, and the introspection endpoint Dovecot's oauth2 passdb and the test
//! SMTP server ask. Tests steer it (token lifetime, rotation, revocation, a slow or failing
//! endpoint) by rewriting its control file, and read what it saw from its state file.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::smtp::{PYTHON, servers_dir};
use crate::{free_port, temp_dir};

pub const CLIENT_ID: &str = "mg-app";
pub const CLIENT_SECRET: &str = "mg-secret";
/// The first refresh token the provider accepts.
pub const REFRESH_TOKEN: &str = "rt-first-0a1b2c";

pub struct Provider {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl Provider {
    /// A provider whose tokens are for `user`; `control` is its initial behaviour (JSON).
    pub fn start(user: &str, control: serde_json::Value) -> Provider {
        let port = free_port();
        let dir = temp_dir("mgoauth");
        let provider_dir = dir.clone();
        std::fs::write(dir.join("control.json"), control.to_string()).unwrap();
        let mut child = Command::new(PYTHON)
            .arg(servers_dir().join("oauth2_endpoint.py"))
            .args([
                &port.to_string(),
                dir.to_str().unwrap(),
                user,
                REFRESH_TOKEN,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "READY",
            "the OAuth2 test provider did not start"
        );
        Provider {
            port,
            dir: provider_dir,
            child,
        }
    }

    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub fn introspection_url(&self) -> String {
        format!("http://127.0.0.1:{}/introspect", self.port)
    }

    /// Replaces the behaviour (see the script's help); keys left out take their defaults.
    pub fn control(&self, control: serde_json::Value) {
        let path = self.dir.join("control.json");
        let tmp = self.dir.join("control.json.tmp");
        std::fs::write(&tmp, control.to_string()).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    /// What it saw: requests, refreshes, grants, reuses, refused, the current refresh token …
    pub fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.join("state.json")).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or_default()
    }

    pub fn count(&self, what: &str) -> u64 {
        self.state()[what].as_u64().unwrap_or_default()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
