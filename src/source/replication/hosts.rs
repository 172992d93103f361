//! The servers `postgres.url` names, tried in order as libpq and the SQL connections
//! (tokio-postgres) try them: `host=a,b port=5432,5433` or `postgres://a:5432,b:5433/db`, one
//! port for all or one per host, `hostaddr` likewise. With `target_session_attrs=read-write`
//! only a server that accepts writes is kept, so after a failover the replication connection
//! finds the promoted standby, as the SQL connections do.

use std::fmt;

use tokio_postgres::config::{Host, TargetSessionAttrs};

use super::ReplicationError;

/// One server to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host name, for TLS.
    pub host: String,
    /// Where to connect: `hostaddr` when given, else the host.
    pub addr: String,
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.port)
    }
}

/// The servers of `config`, in the order given.
pub fn targets(config: &tokio_postgres::Config) -> Result<Vec<Target>, ReplicationError> {
    let (hosts, addrs, ports) = (
        config.get_hosts(),
        config.get_hostaddrs(),
        config.get_ports(),
    );
    let n = hosts.len().max(addrs.len()).max(1);
    (0..n)
        .map(|i| {
            let addr = addrs.get(i).map(ToString::to_string);
            let host = match hosts.get(i) {
                Some(Host::Tcp(h)) => h.clone(),
                None => addr.clone().unwrap_or_else(|| "localhost".to_string()),
                Some(_) => return Err(ReplicationError::UnixSocket),
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            Ok(Target {
                addr: addr.unwrap_or_else(|| host.clone()),
                host,
                port,
            })
        })
        .collect()
}

/// Whether a server that is (or is not) read-only fits `wanted`; `None` when any server does.
pub fn wants_read_only(wanted: TargetSessionAttrs) -> Option<bool> {
    match wanted {
        TargetSessionAttrs::ReadWrite => Some(false),
        TargetSessionAttrs::ReadOnly => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(url: &str) -> Vec<String> {
        let config: tokio_postgres::Config = url.parse().unwrap();
        targets(&config)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn every_host_is_tried_with_its_own_port_or_the_shared_one() {
        assert_eq!(of("postgres://u@a:5001,b:5002/db"), ["a:5001", "b:5002"]);
        assert_eq!(of("host=a,b port=7 dbname=d"), ["a:7", "b:7"]);
        assert_eq!(
            of("host=a,b hostaddr=10.0.0.1,10.0.0.2 port=1,2"),
            ["10.0.0.1:1", "10.0.0.2:2"]
        );
        assert_eq!(of("postgres://u@h/db"), ["h:5432"]);
    }

    #[test]
    fn read_write_keeps_only_a_server_that_accepts_writes() {
        let rw: tokio_postgres::Config =
            "host=a,b target_session_attrs=read-write".parse().unwrap();
        assert_eq!(wants_read_only(rw.get_target_session_attrs()), Some(false));
        let any: tokio_postgres::Config = "host=a".parse().unwrap();
        assert_eq!(wants_read_only(any.get_target_session_attrs()), None);
    }
}
