//! Running across hosts: the hosts file, which line is this process, and
//! the connections between processes.
//!
//! `--hosts FILE` lists one `host:port` per process, in process order, as
//! timely's hostfile does. Every process runs the same binary with the same
//! arguments; each listens on its own line and connects to the others
//! ([`connect`]), each connection authenticated by the cluster's shared
//! secret ([`auth`]). Timely's own connection code retries forever; ours gives
//! up after `--connect-timeout` and names the processes that never came.
//! While the workers run, a [`watchdog`] ends the run when a peer falls
//! silent for `--peer-timeout`.

pub mod auth;
pub mod connect;
pub mod watchdog;

use std::net::{IpAddr, TcpListener, ToSocketAddrs};
use std::path::Path;

/// The processes of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosts {
    /// `host:port` of each process, in process order.
    pub addresses: Vec<String>,
}

impl Hosts {
    /// Reads a hosts file: one `host:port` per line; blank lines and `#`
    /// comments are ignored.
    pub fn load(path: &Path) -> Result<Hosts, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--hosts {}: {e}", path.display()))?;
        Hosts::parse(&text).map_err(|e| format!("--hosts {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Hosts, String> {
        let mut addresses = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((host, port)) = line.rsplit_once(':') else {
                return Err(format!("line {}: `{line}` is not host:port", n + 1));
            };
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(format!("line {}: `{line}` is not host:port", n + 1));
            }
            if addresses.contains(&line.to_string()) {
                return Err(format!("line {}: `{line}` appears twice", n + 1));
            }
            addresses.push(line.to_string());
        }
        if addresses.is_empty() {
            return Err("no host:port lines".into());
        }
        Ok(Hosts { addresses })
    }

    /// Finds this process's line: the one whose host is this machine (its
    /// host name, or an address of one of its interfaces).
    pub fn find_me(&self) -> Result<usize, String> {
        let hostname = hostname();
        let mut matches = Vec::new();
        for (i, address) in self.addresses.iter().enumerate() {
            let host = address.rsplit_once(':').map(|(h, _)| h).unwrap_or(address);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let by_name = hostname.as_deref().is_some_and(|h| {
                h.eq_ignore_ascii_case(host)
                    || h.split('.').next().is_some_and(|short| short.eq_ignore_ascii_case(host))
            });
            if by_name || is_local_address(host) {
                matches.push(i);
            }
        }
        let shown = hostname.unwrap_or_else(|| "(unknown)".into());
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(format!(
                "none of the hosts in the hosts file is this machine ({shown}); pass --process N (0-based line)"
            )),
            many => Err(format!(
                "hosts file lines {} all name this machine ({shown}); pass --process N (0-based line)",
                many.iter().map(|i| (i + 1).to_string()).collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec()).ok()
}

/// True if `host` resolves to an address this machine can listen on.
fn is_local_address(host: &str) -> bool {
    let Ok(addrs) = (host, 0u16).to_socket_addrs() else { return false };
    addrs.into_iter().any(|a| match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => false,
        IpAddr::V6(ip) if ip.is_unspecified() => false,
        ip => TcpListener::bind((ip, 0)).is_ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_files() {
        let h = Hosts::parse("# cluster\nmaster:2101\n\nworker-1:2101  # the second\n").unwrap();
        assert_eq!(h.addresses, vec!["master:2101", "worker-1:2101"]);
        assert!(Hosts::parse("master\n").unwrap_err().contains("line 1"));
        assert!(Hosts::parse("a:1\na:1\n").unwrap_err().contains("twice"));
        assert!(Hosts::parse("\n# nothing\n").is_err());
        assert!(Hosts::parse("a:99999\n").is_err());
    }

    #[test]
    fn finds_this_machine_or_says_why_not() {
        let h = Hosts::parse("192.0.2.1:2101\n127.0.0.1:2101\n").unwrap();
        assert_eq!(h.find_me(), Ok(1));
        let h = Hosts::parse("127.0.0.1:2101\n127.0.0.2:2101\n127.0.0.3:2101\n").unwrap();
        let err = h.find_me().unwrap_err();
        assert!(err.contains("1, 2, 3") && err.contains("--process"), "{err}");
        let h = Hosts::parse("192.0.2.1:2101\n").unwrap();
        assert!(h.find_me().unwrap_err().contains("--process"));
    }
}
