//! Proving that a connection comes from a process of the same cluster,
//! before anything else is said on it.
//!
//! Every process of a run holds the same secret ([`Secret`]: from the file
//! of `--cluster-secret-file` or the `UR_CLUSTER_SECRET` environment
//! variable, never the command line). On every connection both sides send a
//! random nonce; the dialer then proves it knows the secret with an
//! HMAC-SHA256 over both nonces, its role and what the connection carries;
//! the answering side checks it (in constant time), says whether it accepts
//! it and, if so, proves the secret the same way in its own role. Only then
//! do the processes exchange their hellos, each sealed with a MAC under a
//! key derived from the secret and both nonces ([`Session`]). A caller that
//! does not know the secret learns nothing but the answerer's nonce and is
//! refused; its bytes never reach the dataflow.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The environment variable that may hold the cluster secret.
pub const SECRET_ENV: &str = "UR_CLUSTER_SECRET";
/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// The first bytes of both sides' openings.
const MAGIC: &[u8; 8] = b"URTRAIN2";
const NONCE_BYTES: usize = 32;
/// An opening: the magic, what the connection carries, a nonce.
const OPENING_BYTES: usize = 8 + 1 + NONCE_BYTES;
/// An HMAC-SHA256 tag.
pub const TAG_BYTES: usize = 32;
/// The answering side's verdict on the dialer's proof.
const ACCEPTED: u8 = 1;
const REFUSED: u8 = 0;

type HmacSha256 = Hmac<Sha256>;

/// The secret the processes of a cluster share. Its `Debug` shows nothing.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Why no secret could be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("--cluster-secret-file {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "the cluster secret ({from}) has {len} bytes; use at least {MIN_SECRET_BYTES} random ones, e.g. `openssl rand -hex 32`"
    )]
    TooShort { from: String, len: usize },
    #[error(
        "a run on several processes needs the cluster's shared secret: pass --cluster-secret-file FILE (readable only by ur-train's user) or set {SECRET_ENV}; the same on every process (cluster/README.md)"
    )]
    Missing,
}

impl Secret {
    /// The secret in `path` (a trailing newline is not part of it).
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        let bytes = std::fs::read(path).map_err(|source| SecretError::Read { path: path.to_path_buf(), source })?;
        Secret::new(bytes, &format!("--cluster-secret-file {}", path.display()))
    }

    /// The secret in `UR_CLUSTER_SECRET`, if it is set.
    pub fn from_env() -> Result<Option<Secret>, SecretError> {
        match std::env::var_os(SECRET_ENV) {
            None => Ok(None),
            Some(v) => Secret::new(v.into_encoded_bytes(), SECRET_ENV).map(Some),
        }
    }

    /// The secret of `--cluster-secret-file` if given, else of the environment.
    pub fn load(file: Option<&Path>) -> Result<Secret, SecretError> {
        match file {
            Some(path) => Secret::from_file(path),
            None => Secret::from_env()?.ok_or(SecretError::Missing),
        }
    }

    /// A secret given as bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Secret, SecretError> {
        Secret::new(bytes, "the secret given")
    }

    fn new(mut bytes: Vec<u8>, from: &str) -> Result<Secret, SecretError> {
        while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
            bytes.pop();
        }
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort { from: from.to_string(), len: bytes.len() });
        }
        Ok(Secret(bytes))
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as KeyInit>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

/// Why a connection was not taken for a process of this cluster.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("it does not speak ur-train's cluster protocol (another program, or another version of ur-train)")]
    NotUrTrain,
    #[error(
        "it refused this process's proof of the cluster secret: every process needs the same secret (--cluster-secret-file or {SECRET_ENV})"
    )]
    Refused,
    #[error("it did not prove the cluster secret (a process with another secret, or not ur-train)")]
    BadProof,
    #[error("its hello did not carry a valid seal of the cluster secret")]
    BadSeal,
}

/// Which end of a connection a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Dialer,
    Answerer,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Dialer => b"dialer",
            Role::Answerer => b"answerer",
        }
    }
}

/// An authenticated connection's key: it seals and opens the hellos.
pub struct Session {
    key: [u8; TAG_BYTES],
    role: Role,
}

/// Both nonces and what the connection carries: what every MAC covers.
struct Transcript {
    dialer: [u8; NONCE_BYTES],
    answerer: [u8; NONCE_BYTES],
    carries: u8,
}

impl Transcript {
    fn tag(&self, secret: &Secret, purpose: &[u8], role: Role) -> [u8; TAG_BYTES] {
        let mut mac = secret.mac();
        for part in [purpose, role.label(), &self.dialer, &self.answerer, &[self.carries]] {
            mac.update(&(part.len() as u32).to_le_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    fn verify(&self, secret: &Secret, purpose: &[u8], role: Role, tag: &[u8]) -> bool {
        let mut mac = secret.mac();
        for part in [purpose, role.label(), &self.dialer, &self.answerer, &[self.carries]] {
            mac.update(&(part.len() as u32).to_le_bytes());
            mac.update(part);
        }
        mac.verify_slice(tag).is_ok()
    }

    fn session(&self, secret: &Secret, role: Role) -> Session {
        Session { key: self.tag(secret, b"ur-train session key", Role::Dialer), role }
    }
}

fn nonce() -> Result<[u8; NONCE_BYTES], AuthError> {
    let mut n = [0u8; NONCE_BYTES];
    getrandom::fill(&mut n).map_err(|e| AuthError::Io(std::io::Error::other(e.to_string())))?;
    Ok(n)
}

fn opening(carries: u8, nonce: &[u8; NONCE_BYTES]) -> [u8; OPENING_BYTES] {
    let mut b = [0u8; OPENING_BYTES];
    b[..8].copy_from_slice(MAGIC);
    b[8] = carries;
    b[9..].copy_from_slice(nonce);
    b
}

fn read_opening(stream: &mut impl Read) -> Result<(u8, [u8; NONCE_BYTES]), AuthError> {
    let mut b = [0u8; OPENING_BYTES];
    stream.read_exact(&mut b)?;
    if &b[..8] != MAGIC {
        return Err(AuthError::NotUrTrain);
    }
    Ok((b[8], b[9..].try_into().expect("nonce bytes")))
}

/// The dialer's side: says what the connection `carries` (not 0), proves
/// the secret and checks the answerer's proof.
pub fn dial<S: Read + Write>(stream: &mut S, secret: &Secret, carries: u8) -> Result<Session, AuthError> {
    let mine = nonce()?;
    stream.write_all(&opening(carries, &mine))?;
    let (_, theirs) = read_opening(stream)?;
    let t = Transcript { dialer: mine, answerer: theirs, carries };
    stream.write_all(&t.tag(secret, b"ur-train proof", Role::Dialer))?;
    let mut verdict = [0u8; 1 + TAG_BYTES];
    stream.read_exact(&mut verdict[..1])?;
    if verdict[0] != ACCEPTED {
        return Err(AuthError::Refused);
    }
    stream.read_exact(&mut verdict[1..])?;
    if !t.verify(secret, b"ur-train proof", Role::Answerer, &verdict[1..]) {
        return Err(AuthError::BadProof);
    }
    Ok(t.session(secret, Role::Dialer))
}

/// The answering side: checks the dialer's proof (refusing it, and saying
/// so, if it is wrong), proves the secret in turn; returns what the
/// connection carries.
pub fn answer<S: Read + Write>(stream: &mut S, secret: &Secret) -> Result<(Session, u8), AuthError> {
    let mine = nonce()?;
    stream.write_all(&opening(0, &mine))?;
    let (carries, theirs) = read_opening(stream)?;
    if carries == 0 || theirs == mine {
        return Err(AuthError::NotUrTrain);
    }
    let t = Transcript { dialer: theirs, answerer: mine, carries };
    let mut proof = [0u8; TAG_BYTES];
    stream.read_exact(&mut proof)?;
    if !t.verify(secret, b"ur-train proof", Role::Dialer, &proof) {
        let _ = stream.write_all(&[REFUSED]);
        return Err(AuthError::BadProof);
    }
    let mut verdict = [ACCEPTED; 1 + TAG_BYTES];
    verdict[1..].copy_from_slice(&t.tag(secret, b"ur-train proof", Role::Answerer));
    stream.write_all(&verdict)?;
    Ok((t.session(secret, Role::Answerer), carries))
}

impl Session {
    fn mac(&self, role: Role, message: &[u8]) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(role.label());
        mac.update(message);
        mac
    }

    /// This side's seal of `message`.
    pub fn seal(&self, message: &[u8]) -> [u8; TAG_BYTES] {
        self.mac(self.role, message).finalize().into_bytes().into()
    }

    /// Checks the other side's seal of `message` (in constant time).
    pub fn open(&self, message: &[u8], tag: &[u8]) -> Result<(), AuthError> {
        let theirs = match self.role {
            Role::Dialer => Role::Answerer,
            Role::Answerer => Role::Dialer,
        };
        self.mac(theirs, message).verify_slice(tag).map_err(|_| AuthError::BadSeal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes().to_vec(), "test").unwrap()
    }

    fn handshake(dialer: &str, answerer: &str) -> (Result<Session, AuthError>, Result<(Session, u8), AuthError>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let a = secret(answerer);
        let answering = std::thread::spawn(move || answer(&mut l.accept().unwrap().0, &a));
        let mut s = TcpStream::connect(addr).unwrap();
        let dialed = dial(&mut s, &secret(dialer), 2);
        (dialed, answering.join().unwrap())
    }

    #[test]
    fn the_same_secret_agrees_on_a_session() {
        let (d, a) = handshake("0123456789abcdef-same", "0123456789abcdef-same");
        let (d, (a, carries)) = (d.unwrap(), a.unwrap());
        assert_eq!(carries, 2);
        assert!(a.open(b"hello", &d.seal(b"hello")).is_ok());
        assert!(d.open(b"hello", &a.seal(b"hello")).is_ok());
        // A side's own seal is not the other's: a reflected hello fails.
        assert!(matches!(d.open(b"hello", &d.seal(b"hello")), Err(AuthError::BadSeal)));
        assert!(matches!(a.open(b"hellO", &d.seal(b"hello")), Err(AuthError::BadSeal)));
    }

    #[test]
    fn another_secret_is_refused_and_told() {
        let (d, a) = handshake("0123456789abcdef-one", "0123456789abcdef-two");
        assert!(matches!(d, Err(AuthError::Refused)), "{:?}", d.err());
        assert!(matches!(a, Err(AuthError::BadProof)), "{:?}", a.err());
    }

    #[test]
    fn an_echo_is_not_ur_train() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        let echo = std::thread::spawn(move || {
            let mut b = [0u8; OPENING_BYTES];
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
            s
        });
        let r = answer(&mut peer, &secret("0123456789abcdef-any"));
        assert!(matches!(r, Err(AuthError::NotUrTrain)), "{:?}", r.err());
        drop(echo.join());
    }

    #[test]
    fn short_or_missing_secrets_are_refused() {
        assert!(matches!(Secret::new(b"short\n".to_vec(), "x"), Err(SecretError::TooShort { len: 5, .. })));
        let s = Secret::new(b"0123456789abcdef\n".to_vec(), "x").unwrap();
        assert_eq!(s.0, b"0123456789abcdef");
        assert_eq!(format!("{s:?}"), "Secret(…)");
    }
}
