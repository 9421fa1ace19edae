//! Talking to Elasticsearch (7.17, 8.x, 9.x) or OpenSearch (2.x, 3.x).
//!
//! Only calls common to all of them are used — index create/delete, bulk,
//! refresh, count, `_aliases`, get, search, `_mapping` — sent as plain JSON
//! through the `elasticsearch` crate's transport (no version-specific
//! compatibility headers), with basic auth or an API key and an optional CA
//! certificate (Elasticsearch 8 is secured by default). Secrets come from
//! the environment or from files, never need to be on the command line, and
//! are never shown: URLs are shown with their user info replaced
//! ([`redact`]), in errors and in `Debug` output alike. [`indices`] knows
//! which indices hold a model and which of them is live.

pub mod indices;

use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::transport::{MultiNodeConnectionPool, SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::{Method, Url};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

pub use elasticsearch::http::Method as HttpMethod;

/// How to reach the cluster (`Debug` shows no secret).
#[derive(Clone, Default)]
pub struct EsConfig {
    pub urls: Vec<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// `id:key`, or the base64 encoded key Elasticsearch returns.
    pub api_key: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub timeout: Option<Duration>,
}

impl std::fmt::Debug for EsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsConfig")
            .field("urls", &self.urls.iter().map(|u| redact(u)).collect::<Vec<_>>())
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `text` with the user info of every URL in it (`scheme://user:secret@`)
/// replaced by `***@`: for errors and logs.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == ')' || c == '"' || c == ',')
            .unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***@");
                rest = &tail[userinfo_end + 1..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

impl EsConfig {
    /// The URLs as they may be shown (no user info).
    pub fn shown(&self) -> String {
        redact(&self.urls.join(","))
    }

    /// Parses `--es-url a,b,c`.
    pub fn with_urls(list: &str) -> Result<EsConfig, String> {
        let urls: Vec<String> =
            list.split(',').map(|u| u.trim().trim_end_matches('/').to_string()).filter(|u| !u.is_empty()).collect();
        if urls.is_empty() {
            return Err("--es-url: no URL".into());
        }
        for u in &urls {
            Url::parse(u).map_err(|e| format!("--es-url {}: {e}", redact(u)))?;
        }
        Ok(EsConfig { urls, ..EsConfig::default() })
    }
}

/// Command-line flags for reaching a cluster (shared by `ur-train` and
/// `ur`). Secrets are best given in the environment (`ES_PASSWORD`,
/// `ES_API_KEY`) or in files, which `ps` does not show.
#[derive(clap::Args, Clone, Default)]
#[command(next_help_heading = "Elasticsearch")]
pub struct EsArgs {
    /// Elasticsearch (7.17, 8, 9) or OpenSearch (2, 3) URLs, comma-separated.
    #[arg(long, value_name = "URL[,URL...]", global = true)]
    pub es_url: Option<String>,

    /// User for basic authentication (password in ES_PASSWORD, --es-password-file or --es-password).
    #[arg(long, value_name = "USER", global = true)]
    pub es_user: Option<String>,

    /// Password for --es-user (prefer ES_PASSWORD or --es-password-file:
    /// a value on the command line is visible to every user in `ps`).
    #[arg(long, value_name = "PASSWORD", env = "ES_PASSWORD", hide_env_values = true, global = true)]
    pub es_password: Option<String>,

    /// A file holding the password for --es-user (a trailing newline is ignored).
    #[arg(long, value_name = "FILE", conflicts_with = "es_password", global = true)]
    pub es_password_file: Option<PathBuf>,

    /// API key, `id:key` or the encoded form (prefer ES_API_KEY or --es-api-key-file).
    #[arg(long, value_name = "KEY", env = "ES_API_KEY", hide_env_values = true, global = true)]
    pub es_api_key: Option<String>,

    /// A file holding the API key (a trailing newline is ignored).
    #[arg(long, value_name = "FILE", conflicts_with = "es_api_key", global = true)]
    pub es_api_key_file: Option<PathBuf>,

    /// CA certificate (PEM) that signed the cluster's HTTPS certificate
    /// (Elasticsearch 8's `http_ca.crt`).
    #[arg(long, value_name = "FILE", global = true)]
    pub es_ca_cert: Option<PathBuf>,
}

impl std::fmt::Debug for EsArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsArgs")
            .field("es_url", &self.es_url.as_deref().map(redact))
            .field("es_user", &self.es_user)
            .field("es_password", &self.es_password.as_ref().map(|_| "<redacted>"))
            .field("es_password_file", &self.es_password_file)
            .field("es_api_key", &self.es_api_key.as_ref().map(|_| "<redacted>"))
            .field("es_api_key_file", &self.es_api_key_file)
            .field("es_ca_cert", &self.es_ca_cert)
            .finish()
    }
}

/// A secret from a file, without its trailing line break.
fn secret_file(flag: &str, path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        return Err(format!("{flag} {}: the file is empty", path.display()));
    }
    Ok(secret)
}

impl EsArgs {
    /// The connection settings, if `--es-url` is given.
    pub fn config(&self) -> Result<Option<EsConfig>, String> {
        let Some(urls) = &self.es_url else { return Ok(None) };
        let mut config = EsConfig::with_urls(urls)?;
        config.user = self.es_user.clone();
        config.password = match &self.es_password_file {
            Some(path) => Some(secret_file("--es-password-file", path)?),
            None => self.es_password.clone(),
        };
        config.api_key = match &self.es_api_key_file {
            Some(path) => Some(secret_file("--es-api-key-file", path)?),
            None => self.es_api_key.clone(),
        };
        config.ca_cert = self.es_ca_cert.clone();
        Ok(Some(config))
    }
}

/// What the server says it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServerInfo {
    /// `elasticsearch` or `opensearch`.
    pub distribution: String,
    pub version: String,
    pub major: u32,
}

/// Whether a server of this flavour (`elasticsearch` or `opensearch`) and
/// major version is one the client can work with: Elasticsearch 7 and later
/// (5 and 6, the PredictionIO UR's, need mapping types), any OpenSearch.
pub fn is_supported(distribution: &str, major: u32) -> bool {
    match distribution {
        "opensearch" => major >= 1,
        _ => major >= 7,
    }
}

/// A connected client.
#[derive(Clone)]
pub struct Es {
    client: elasticsearch::Elasticsearch,
    pub info: ServerInfo,
    pub urls: Vec<String>,
}

/// An HTTP answer: status and JSON body (`Null` when empty or not JSON).
pub type Reply = (u16, Value);

impl Es {
    /// Connects and asks the server for its version.
    pub async fn connect(config: &EsConfig) -> Result<Es, String> {
        let urls: Vec<Url> = config
            .urls
            .iter()
            .map(|u| Url::parse(u).map_err(|e| format!("{}: {e}", redact(u))))
            .collect::<Result<_, _>>()?;
        let mut builder = if urls.len() == 1 {
            TransportBuilder::new(SingleNodeConnectionPool::new(urls[0].clone()))
        } else {
            TransportBuilder::new(MultiNodeConnectionPool::round_robin(urls.clone(), None))
        };
        builder = builder.timeout(config.timeout.unwrap_or(Duration::from_secs(60))).enable_meta_header(false);
        if let Some(key) = &config.api_key {
            builder = builder.auth(match key.split_once(':') {
                Some((id, k)) => Credentials::ApiKey(id.into(), k.into()),
                None => Credentials::EncodedApiKey(key.clone()),
            });
        } else if let Some(user) = &config.user {
            builder = builder.auth(Credentials::Basic(user.clone(), config.password.clone().unwrap_or_default()));
        }
        if let Some(path) = &config.ca_cert {
            let pem = std::fs::read(path).map_err(|e| format!("--es-ca-cert {}: {e}", path.display()))?;
            let cert = Certificate::from_pem(&pem).map_err(|e| format!("--es-ca-cert {}: {e}", path.display()))?;
            builder = builder.cert_validation(CertificateValidation::Full(cert));
        }
        let transport = builder.build().map_err(|e| format!("Elasticsearch client: {e}"))?;
        let client = elasticsearch::Elasticsearch::new(transport);
        let mut es = Es {
            client,
            info: ServerInfo { distribution: String::new(), version: String::new(), major: 0 },
            urls: config.urls.clone(),
        };
        let shown = config.shown();
        let (status, root) =
            es.call(Method::Get, "/", None).await.map_err(|e| format!("cannot reach Elasticsearch at {shown}: {e}"))?;
        let (version, distribution) = match status {
            200 => (
                root["version"]["number"].as_str().unwrap_or("").to_string(),
                root["version"]["distribution"].as_str().unwrap_or("elasticsearch").to_string(),
            ),
            401 | 403 => {
                return Err(format!(
                    "Elasticsearch at {shown} refused the credentials ({status}): pass --es-user/--es-password or --es-api-key"
                ));
            }
            _ => {
                // Minimal distributions (the integ-test zip) have no `GET /`: ask the node.
                let (status, nodes) = es
                    .call(Method::Get, "/_nodes/_local?filter_path=nodes.*.version", None)
                    .await
                    .map_err(|e| format!("cannot reach Elasticsearch at {shown}: {e}"))?;
                if status != 200 {
                    return Err(format!("Elasticsearch at {shown} answered {status}: {}", error_reason(&nodes)));
                }
                let version = nodes["nodes"]
                    .as_object()
                    .and_then(|n| n.values().next())
                    .and_then(|n| n["version"].as_str())
                    .unwrap_or("")
                    .to_string();
                (version, "elasticsearch".to_string())
            }
        };
        let major = version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
        if !is_supported(&distribution, major) {
            return Err(format!(
                "{shown} runs {distribution} {version}, which is not supported (Elasticsearch 5 and 6 need \
                 mapping types, which this client does not send); supported: Elasticsearch 7+, OpenSearch; tested: Elasticsearch 7.17, 8.19, \
                 9.2, OpenSearch 2.19, 3.6"
            ));
        }
        es.info = ServerInfo { distribution, version, major };
        Ok(es)
    }

    /// One request with a JSON (or NDJSON) body.
    pub async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Reply, String> {
        let mut headers = HeaderMap::new();
        if path.contains("_bulk") {
            headers.insert(
                elasticsearch::http::headers::CONTENT_TYPE,
                elasticsearch::http::headers::HeaderValue::from_static("application/x-ndjson"),
            );
        }
        let response = self
            .client
            .send(method, path, headers, Option::<&()>::None, body, None)
            .await
            .map_err(|e| redact(&with_causes(&e)))?;
        let status = response.status_code().as_u16();
        let text = response.text().await.map_err(|e| redact(&e.to_string()))?;
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// A request that must succeed (2xx); the error names what was done.
    pub async fn ok(&self, what: &str, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let bytes = body.map(|b| serde_json::to_vec(&b).expect("JSON"));
        let (status, value) = self.call(method, path, bytes).await.map_err(|e| format!("{what}: {e}"))?;
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            Err(format!("{what}: Elasticsearch answered {status}: {}", error_reason(&value)))
        }
    }
}

/// An error and its causes (a TLS failure is a cause several levels down).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// The `error.reason` of an Elasticsearch error body, or the body.
pub fn error_reason(value: &Value) -> String {
    match &value["error"] {
        Value::Object(e) => {
            let kind = e.get("type").and_then(Value::as_str).unwrap_or("error");
            let reason = e.get("reason").and_then(Value::as_str).unwrap_or("");
            let cause = e.get("caused_by").and_then(|c| c.get("reason")).and_then(Value::as_str);
            match cause {
                Some(c) => format!("{kind}: {reason} ({c})"),
                None => format!("{kind}: {reason}"),
            }
        }
        Value::Null => value.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_url_lists() {
        let c = EsConfig::with_urls("http://a:9200/, http://b:9200").unwrap();
        assert_eq!(c.urls, vec!["http://a:9200", "http://b:9200"]);
        assert!(EsConfig::with_urls(" , ").is_err());
        assert!(EsConfig::with_urls("not a url").is_err());
    }

    #[test]
    fn user_info_is_redacted() {
        assert_eq!(
            redact("cannot reach Elasticsearch at http://elastic:S3cret@es1:9200/x, https://u:p@es2 (http://es3)"),
            "cannot reach Elasticsearch at http://***@es1:9200/x, https://***@es2 (http://es3)"
        );
        assert_eq!(redact("no url here: a@b"), "no url here: a@b");
        let c = EsConfig { password: Some("S3cret".into()), ..EsConfig::with_urls("http://e:S3cret@h:9200").unwrap() };
        assert!(!format!("{c:?}").contains("S3cret"), "{c:?}");
        assert_eq!(c.shown(), "http://***@h:9200");
    }

    #[test]
    fn secrets_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "S3cret\n").unwrap();
        let args = EsArgs {
            es_url: Some("http://h:9200".into()),
            es_user: Some("elastic".into()),
            es_password_file: Some(dir.path().join("pw")),
            ..EsArgs::default()
        };
        assert_eq!(args.config().unwrap().unwrap().password.as_deref(), Some("S3cret"));
        let missing = EsArgs { es_api_key_file: Some(dir.path().join("none")), ..args };
        assert!(missing.config().unwrap_err().contains("--es-api-key-file"));
    }

    #[test]
    fn supported_versions() {
        assert!(!is_supported("elasticsearch", 5));
        assert!(!is_supported("elasticsearch", 6));
        assert!((7..=9).all(|m| is_supported("elasticsearch", m)));
        assert!((2..=3).all(|m| is_supported("opensearch", m)));
    }

    #[test]
    fn error_reasons() {
        let v = json!({"error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [popRank]", "caused_by": {"reason": "not a number"}}, "status": 400});
        assert_eq!(error_reason(&v), "mapper_parsing_exception: failed to parse field [popRank] (not a number)");
    }
}
