//! Who left a temporary path behind: the host, its boot and the process.
//!
//! Temporary names of a run carry `@<host>@<boot>` after the run's name, so
//! a later run can tell its own host's leftovers (and among them those of
//! dead processes or of an earlier boot) from another host's, whose
//! processes it cannot see: with a shared output, only the host that wrote
//! a temporary directory may judge it abandoned.

use std::sync::OnceLock;

/// This machine: its host name and boot id, as put in temporary names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub host: String,
    /// The first 12 hex digits of `/proc/sys/kernel/random/boot_id` (empty
    /// if unknown).
    pub boot: String,
}

impl Machine {
    /// This machine, read once per process.
    pub fn this() -> &'static Machine {
        static THIS: OnceLock<Machine> = OnceLock::new();
        THIS.get_or_init(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
            Machine::from_raw(&host, &boot)
        })
    }

    /// From the raw host name and boot id: characters outside
    /// `[A-Za-z0-9._-]` of the host become `_` (a name stays one path
    /// component), the boot id keeps its first 12 hex digits.
    pub fn from_raw(host: &str, boot: &str) -> Machine {
        let host: String = host
            .trim()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
            .collect();
        let host = if host.is_empty() { "localhost".to_string() } else { host };
        let boot: String = boot.chars().filter(char::is_ascii_hexdigit).take(12).collect();
        Machine { host, boot }
    }

    /// `<run>@<host>@<boot>`: the name of `run` on this machine.
    pub fn tag(&self, run: &str) -> String {
        format!("{run}@{}@{}", self.host, self.boot)
    }
}

/// The writer of a temporary name, as read back from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writer {
    /// `<run>@<host>@<boot>`.
    Tagged { run: String, machine: Machine },
    /// A name without host (a cluster run's shared name, or written by a
    /// release before hosts were recorded): no host can judge it.
    Untagged(String),
}

impl Writer {
    /// Reads `<run>@<host>@<boot>` or a bare `<run>`.
    pub fn parse(name: &str) -> Writer {
        let mut fields = name.rsplitn(3, '@');
        match (fields.next(), fields.next(), fields.next()) {
            (Some(boot), Some(host), Some(run)) => {
                Writer::Tagged { run: run.to_string(), machine: Machine { host: host.into(), boot: boot.into() } }
            }
            _ => Writer::Untagged(name.to_string()),
        }
    }

    /// True only if the writer is known to be gone: it ran on `this` host,
    /// and either that was another boot or its process no longer exists.
    /// A process is the leading number of the run's name (`<pid>` or
    /// `<pid>-<update>`).
    pub fn is_gone(&self, this: &Machine, alive: impl Fn(u32) -> bool) -> bool {
        let Writer::Tagged { run, machine } = self else { return false };
        if machine.host != this.host {
            return false;
        }
        if !machine.boot.is_empty() && !this.boot.is_empty() && machine.boot != this.boot {
            return true;
        }
        match run.split('-').next().unwrap_or_default().parse::<u32>() {
            Ok(pid) => !alive(pid),
            Err(_) => false,
        }
    }
}

/// True if process `pid` exists on this machine.
pub fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here() -> Machine {
        Machine::from_raw("node-1.example\n", "0f3c5a2e-9d1b-4c7a-8e6f-123456789abc\n")
    }

    #[test]
    fn names_round_trip() {
        let m = here();
        assert_eq!(m.boot, "0f3c5a2e9d1b");
        let tag = m.tag("123-4");
        assert_eq!(tag, "123-4@node-1.example@0f3c5a2e9d1b");
        assert_eq!(Writer::parse(&tag), Writer::Tagged { run: "123-4".into(), machine: m });
        assert_eq!(Writer::parse("c00ff"), Writer::Untagged("c00ff".into()));
        assert_eq!(Machine::from_raw("a b/c", "").host, "a_b_c");
    }

    #[test]
    fn only_this_hosts_dead_writers_are_gone() {
        let m = here();
        let dead = |_| false;
        let alive = |_| true;
        assert!(Writer::parse(&m.tag("12")).is_gone(&m, dead));
        assert!(!Writer::parse(&m.tag("12")).is_gone(&m, alive));
        let earlier_boot = Machine { boot: "aaaaaaaaaaaa".into(), ..m.clone() };
        assert!(Writer::parse(&earlier_boot.tag("12")).is_gone(&m, alive));
        let other_host = Machine { host: "node-2".into(), ..m.clone() };
        assert!(!Writer::parse(&other_host.tag("12")).is_gone(&m, dead));
        assert!(!Writer::parse("12").is_gone(&m, dead));
        assert!(!Writer::parse(&m.tag("c00ff")).is_gone(&m, dead));
    }
}
