//! Apps and their access keys, as `pio app` and `pio accesskey` keep them:
//! one file, `<root>/_apps.json` (a `_` name, which `ur-train` skips),
//! replaced atomically (written beside, synced, renamed, directory synced).
//! A key may be limited to some event names. Keys are looked up in
//! constant time per key, so the time of a refusal tells nothing about how
//! much of a key was right.

use super::{EventsError, random_hex};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The registry's file name under the storage root.
pub const APPS_FILE: &str = "_apps.json";

/// An app: a name events are stored under, `<root>/<name>/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub name: String,
    pub id: u32,
    pub created: String,
}

/// An access key of an app; `events` empty: every event name is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    pub key: String,
    pub app: String,
    #[serde(default)]
    pub events: Vec<String>,
}

impl AccessKey {
    /// Whether this key may send `event`.
    pub fn allows(&self, event: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == event)
    }
}

/// All apps and keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub apps: Vec<App>,
    pub keys: Vec<AccessKey>,
}

/// The registry file of a storage root.
pub fn registry_path(root: &Path) -> PathBuf {
    root.join(APPS_FILE)
}

/// An app name is one path component that `ur-train` does not skip.
pub fn check_app_name(name: &str) -> Result<(), EventsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['_', '.', '-'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(EventsError::Usage(format!(
            "app name `{name}`: use 1 to 64 of A-Z a-z 0-9 _ - . , not starting with _ . or -"
        )))
    }
}

impl Registry {
    /// Reads the registry of `root`; none yet: empty.
    pub fn load(root: &Path) -> Result<Registry, EventsError> {
        let path = registry_path(root);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| EventsError::Storage(format!("{}: not an apps file: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry::default()),
            Err(e) => Err(EventsError::Storage(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Replaces the registry file atomically.
    pub fn save(&self, root: &Path) -> Result<(), EventsError> {
        let fail =
            |e: std::io::Error| EventsError::Storage(format!("cannot write {}: {e}", registry_path(root).display()));
        std::fs::create_dir_all(root).map_err(fail)?;
        let tmp = root.join(format!("._apps.json.{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(fail)?;
        let mut text = serde_json::to_vec_pretty(self).expect("a registry serializes");
        text.push(b'\n');
        f.write_all(&text).map_err(fail)?;
        f.sync_all().map_err(fail)?;
        std::fs::rename(&tmp, registry_path(root)).map_err(fail)?;
        std::fs::File::open(root).and_then(|d| d.sync_all()).map_err(fail)
    }

    pub fn app(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.name == name)
    }

    fn require_app(&self, name: &str) -> Result<&App, EventsError> {
        self.app(name).ok_or_else(|| EventsError::Usage(format!("no app named `{name}` (see `ur app list`)")))
    }

    /// Adds an app and a key for it; returns the key.
    pub fn new_app(&mut self, name: &str, created: String) -> Result<String, EventsError> {
        check_app_name(name)?;
        if self.app(name).is_some() {
            return Err(EventsError::Usage(format!("app `{name}` already exists")));
        }
        let id = self.apps.iter().map(|a| a.id).max().unwrap_or(0) + 1;
        self.apps.push(App { name: name.to_string(), id, created });
        self.new_key(name, Vec::new())
    }

    /// Removes an app and its keys (not its stored events); returns how
    /// many keys went with it.
    pub fn delete_app(&mut self, name: &str) -> Result<usize, EventsError> {
        self.require_app(name)?;
        self.apps.retain(|a| a.name != name);
        let before = self.keys.len();
        self.keys.retain(|k| k.app != name);
        Ok(before - self.keys.len())
    }

    /// Adds a key to an app, limited to `events` if not empty.
    pub fn new_key(&mut self, app: &str, events: Vec<String>) -> Result<String, EventsError> {
        self.require_app(app)?;
        let key = random_hex(32);
        self.keys.push(AccessKey { key: key.clone(), app: app.to_string(), events });
        Ok(key)
    }

    pub fn delete_key(&mut self, key: &str) -> Result<AccessKey, EventsError> {
        let i = self
            .keys
            .iter()
            .position(|k| k.key == key)
            .ok_or_else(|| EventsError::Usage("no such access key (see `ur accesskey list`)".into()))?;
        Ok(self.keys.remove(i))
    }

    /// The key equal to `given`, comparing every key in full.
    pub fn authenticate(&self, given: &str) -> Option<&AccessKey> {
        let mut found = None;
        for k in &self.keys {
            if constant_time_eq(k.key.as_bytes(), given.as_bytes()) {
                found = Some(k);
            }
        }
        found.filter(|k| self.app(&k.app).is_some())
    }
}

/// Equality whose time depends on the lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_and_keys_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::load(dir.path()).unwrap();
        let key = r.new_app("shop", "now".into()).unwrap();
        assert_eq!(key.len(), 64);
        assert!(r.new_app("shop", "now".into()).is_err());
        assert!(r.new_app("_x", "now".into()).is_err());
        assert!(r.new_app("a/b", "now".into()).is_err());
        let limited = r.new_key("shop", vec!["view".into()]).unwrap();
        r.save(dir.path()).unwrap();
        let r2 = Registry::load(dir.path()).unwrap();
        assert_eq!(r, r2);
        assert_eq!(r2.authenticate(&key).unwrap().app, "shop");
        assert!(r2.authenticate(&key[..63]).is_none());
        assert!(r2.authenticate("").is_none());
        let k = r2.authenticate(&limited).unwrap();
        assert!(k.allows("view") && !k.allows("buy"));
        let mut r3 = r2.clone();
        assert_eq!(r3.delete_app("shop").unwrap(), 2);
        assert!(r3.authenticate(&key).is_none());
        assert!(
            constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"ab", b"abc")
        );
    }
}
