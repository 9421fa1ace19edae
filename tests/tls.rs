//! TLS and authentication for real: a TLS-terminating, auth-checking proxy
//! on loopback (certificates made here by a test CA) in front of the real
//! Elasticsearch. It takes `Authorization: ApiKey <base64 id:key>` for one
//! key and forwards with the real basic auth; basic auth passes through to
//! Elasticsearch. The client must refuse a certificate from another CA,
//! accept the right CA, report a wrong password or key as refused
//! credentials, and answer queries over TLS with an API key from a file.

use crate::elasticsearch::{PASSWORD, USER, engine_named, secured, server, train};
use crate::util::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use ur::es::{Es, EsConfig};
use ur::runtime::block_on;

const KEY_ID: &str = "test-id";
const KEY_SECRET: &str = "test-secret";

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A test CA: its certificate (PEM) and the issuer that signs with it.
fn ca() -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// The proxy: HTTPS on loopback with a certificate for 127.0.0.1 signed by `issuer`.
fn proxy(issuer: &Issuer<'static, KeyPair>, target: &str) -> String {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let target = target.trim_start_matches("http://").to_string();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            let (config, target) = (config.clone(), target.clone());
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else { return };
                let _ = relay(rustls::StreamOwned::new(conn, client), &target);
            });
        }
    });
    format!("https://{addr}")
}

/// One request: authenticated and forwarded, or refused with 401; then the connection closes.
fn relay(tls: rustls::StreamOwned<rustls::ServerConnection, TcpStream>, target: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(tls);
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("authorization:") {
            authorization = Some(line["authorization:".len()..].trim().to_string());
            continue;
        }
        if lower.starts_with("connection:") {
            continue;
        }
        head.push(line);
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let api_key = format!("ApiKey {}", base64(format!("{KEY_ID}:{KEY_SECRET}").as_bytes()));
    let forwarded = match authorization {
        Some(a) if a == api_key => Some(format!("Basic {}", base64(format!("{USER}:{PASSWORD}").as_bytes()))),
        Some(a) if a.starts_with("Basic ") => Some(a),
        Some(_) => None,
        None => Some(String::new()),
    };
    let mut tls = reader.into_inner();
    let Some(auth) = forwarded else {
        let body = r#"{"error":{"type":"security_exception","reason":"unable to authenticate with provided credentials"},"status":401}"#;
        write!(
            tls,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        tls.conn.send_close_notify();
        return tls.flush();
    };
    let mut upstream = TcpStream::connect(target)?;
    let mut request = head.concat();
    if !auth.is_empty() {
        request.push_str(&format!("Authorization: {auth}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    upstream.write_all(request.as_bytes())?;
    upstream.write_all(&body)?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response)?;
    let first = response.windows(2).position(|w| w == b"\r\n").map_or(0, |p| p + 2);
    tls.write_all(&response[..first])?;
    tls.write_all(b"Connection: close\r\n")?;
    tls.write_all(&response[first..])?;
    tls.conn.send_close_notify();
    tls.flush()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn connect(url: &str, ca: &Path, user: Option<&str>, password: &str, api_key: Option<&str>) -> Result<Es, String> {
    let config = EsConfig {
        user: user.map(str::to_string),
        password: Some(password.to_string()),
        api_key: api_key.map(str::to_string),
        ca_cert: Some(ca.to_path_buf()),
        ..EsConfig::with_urls(url).unwrap()
    };
    block_on(Es::connect(&config))
}

#[test]
fn tls_and_credentials_through_an_auth_checking_proxy() {
    let es = server();
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, issuer) = ca();
    let (other_pem, _) = ca();
    let ca = write(dir.path(), "ca.pem", &ca_pem);
    let other = write(dir.path(), "other.pem", &other_pem);
    let url = proxy(&issuer, &es.url);
    let key = format!("{KEY_ID}:{KEY_SECRET}");

    // Another CA's certificate: refused, and said so.
    let err = connect(&url, &other, None, "", Some(&key)).err().expect("a certificate from another CA is refused");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // The right CA and the API key: accepted.
    let client = connect(&url, &ca, None, "", Some(&key)).unwrap();
    assert_eq!(client.info.distribution, "elasticsearch");

    // A wrong key, a wrong password: refused credentials, clearly.
    let err = connect(&url, &ca, None, "", Some("test-id:wrong")).err().expect("a wrong key is refused");
    assert!(err.contains("refused the credentials (401)"), "{err}");
    if secured() {
        let err = connect(&url, &ca, Some(USER), "wrong", None).err().expect("a wrong password is refused");
        assert!(err.contains("refused the credentials (401)"), "{err}");
        connect(&url, &ca, Some(USER), PASSWORD, None).unwrap();
    }

    // `ur query` over TLS, the key in a file.
    let engine = engine_named(dir.path(), "hm_tls");
    assert!(train(&engine, &handmade_events(), &es.url, &[]).status.success());
    let key_file = write(dir.path(), "key", &format!("{key}\n"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ur"))
        .args(["-e", engine.to_str().unwrap(), "--es-url", &url, "--es-ca-cert", ca.to_str().unwrap()])
        .args(["--es-api-key-file", key_file.to_str().unwrap(), "query", r#"{"user": "u1"}"#])
        .env_remove("ES_API_KEY")
        .env_remove("ES_PASSWORD")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("itemScores"));
}
