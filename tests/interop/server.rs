//! The node `oidc-provider` child process (`interop/server.js`) and its control endpoint.
//!
//! Each test starts its own server on free loopback ports with clients, secrets and keys made
//! for it, and reads the server's own counters. The server exits when its stdin closes, which
//! `Drop` does (and kills it to be sure), so a failed test leaves no node process behind.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Once, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::json;
use tower_auth_refresh::oauth2::{HttpClient, OAuth2Refresher, OAuth2RefresherBuilder};

/// The registered clients, by what they are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKind {
    /// `client_secret_post`, password + refresh_token + client_credentials.
    Post,
    /// `client_secret_basic`, which the server enforces for this client.
    Basic,
    /// `private_key_jwt` with a key pair made at test time.
    PrivateKeyJwt,
    /// A public client (`none`).
    Public,
    /// Allowed fewer scopes than the harness asks for.
    Narrow,
    /// DPoP-bound access tokens, with server nonces required.
    Dpop,
}

impl ClientKind {
    const ALL: [ClientKind; 6] = [
        ClientKind::Post,
        ClientKind::Basic,
        ClientKind::PrivateKeyJwt,
        ClientKind::Public,
        ClientKind::Narrow,
        ClientKind::Dpop,
    ];

    pub fn id(self) -> &'static str {
        match self {
            ClientKind::Post => "interop-post",
            ClientKind::Basic => "interop-basic",
            ClientKind::PrivateKeyJwt => "interop-private-key-jwt",
            ClientKind::Public => "interop-public",
            ClientKind::Narrow => "interop-narrow",
            ClientKind::Dpop => "interop-dpop",
        }
    }
}

/// The scope every login asks for; `offline_access` is what makes oidc-provider (and this
/// server's password grant) issue a refresh token.
pub const SCOPE: &str = "openid offline_access api:read";
/// The narrow client may have only these.
pub const NARROW_SCOPE: &str = "openid offline_access api:read";

/// Lifetimes the server gives its tokens, in whole seconds (oidc-provider's unit).
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    pub access: u64,
    pub refresh: u64,
    pub client_credentials: u64,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            access: 60,
            refresh: 600,
            client_credentials: 60,
        }
    }
}

/// Where the server listens, as it printed it.
#[derive(Clone, Debug, Deserialize)]
pub struct Urls {
    pub issuer: String,
    pub token: String,
    pub revocation: String,
    pub discovery: String,
    pub api: String,
    pub control: String,
}

/// The server's counters (`GET /stats` on the control endpoint).
#[derive(Clone, Debug, Deserialize)]
pub struct Stats {
    pub token_requests: u64,
    token: HashMap<String, u64>,
    pub token_errors: Vec<TokenError>,
    pub reuse_detected: u64,
    pub grants_revoked: u64,
    /// Successful revocations (oidc-provider's `revocation.success`).
    pub revocations: u64,
    pub revocation_requests: u64,
    /// Token and revocation requests by the client authentication they sent.
    client_auth: HashMap<String, u64>,
    pub api_ok: u64,
    pub api_unauthorized: u64,
    /// DPoP requests the API accepted, nonce challenges it sent, proofs it refused (and why).
    #[cfg_attr(not(feature = "dpop"), allow(dead_code))]
    pub api_dpop_ok: u64,
    #[cfg_attr(not(feature = "dpop"), allow(dead_code))]
    pub api_dpop_nonce_challenges: u64,
    #[cfg_attr(not(feature = "dpop"), allow(dead_code))]
    pub api_dpop_invalid_proofs: u64,
    #[cfg_attr(not(feature = "dpop"), allow(dead_code))]
    pub api_dpop_errors: Vec<String>,
}

/// One refusal as oidc-provider saw it: `detail` is what it says only in its logs.
#[derive(Clone, Debug, Deserialize)]
pub struct TokenError {
    pub grant_type: Option<String>,
    pub status: u16,
    pub error: String,
    pub error_description: Option<String>,
    pub detail: Option<String>,
}

impl Stats {
    /// Token-endpoint answers for `grant` with `outcome` ("ok" or an RFC 6749 error code).
    pub fn token(&self, grant: &str, outcome: &str) -> u64 {
        self.token
            .get(&format!("{grant} {outcome}"))
            .copied()
            .unwrap_or(0)
    }

    /// Token and revocation requests that authenticated with `method` (`client_secret_basic`,
    /// `client_secret_post`, `private_key_jwt`, `none`).
    pub fn client_auth(&self, method: &str) -> u64 {
        self.client_auth.get(method).copied().unwrap_or(0)
    }

    /// Token-endpoint answers for `grant`, whatever the outcome.
    pub fn token_all(&self, grant: &str) -> u64 {
        let prefix = format!("{grant} ");
        self.token
            .iter()
            .filter(|(key, _)| key.starts_with(&prefix))
            .map(|(_, count)| count)
            .sum()
    }
}

/// A running `interop/server.js`.
pub struct Interop {
    child: Child,
    stdin: Option<ChildStdin>,
    dir: PathBuf,
    pub urls: Urls,
    pub username: String,
    pub password: String,
    /// The private_key_jwt client's keys, made for this server: a P-256 key as PKCS#8 PEM, an
    /// RSA key as a private JWK.
    #[cfg_attr(not(feature = "private-key-jwt"), allow(dead_code))]
    pub ec_private_pem: String,
    #[cfg_attr(not(feature = "private-key-jwt"), allow(dead_code))]
    pub rsa_private_jwk: String,
    secrets: HashMap<ClientKind, String>,
    control: HttpClient,
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// Whether the suite must run: `.ci/run` sets `INTEROP_REQUIRED=1`.
fn required() -> bool {
    std::env::var("INTEROP_REQUIRED").as_deref() == Ok("1")
}

/// Why the suite cannot run here, if it cannot.
fn missing() -> Option<String> {
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|status| status.success()) {
        return Some("no `node` on the PATH (install Node.js 20 or later)".into());
    }
    let package = interop_dir().join("node_modules/oidc-provider/package.json");
    if !package.exists() {
        return Some(
            "interop/node_modules is not installed (run `npm ci --prefix interop`)".into(),
        );
    }
    None
}

/// 32 random bytes as hex, for client secrets and the password.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn run_node(script: &Path) -> String {
    let output = Command::new("node").arg(script).output().expect("run node");
    assert!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// How long a server may take to print its URLs: about 0.2 s on an idle machine, 2 s with both
/// cores busy.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts `interop/server.js` and reads its URLs, or says why not: the child's exit status, or
/// that nothing came within [`START_TIMEOUT`], with what the child wrote to `log_name`.
fn launch(config: &Path, dir: &Path, log_name: &str) -> Result<(Child, ChildStdin, Urls), String> {
    let log_path = dir.join(log_name);
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new("node")
        .arg(interop_dir().join("server.js"))
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start node interop/server.js");
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    let started = Instant::now();
    let outcome = loop {
        match receiver.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if !line.is_empty() => {
                break serde_json::from_str::<Urls>(&line)
                    .map_err(|error| format!("printed {line:?} ({error})"));
            }
            // The child closed stdout: its status says why.
            Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child
                    .wait()
                    .map_or_else(|e| e.to_string(), |s| s.to_string());
                break Err(format!("exited ({status}) after {:?}", started.elapsed()));
            }
            Err(mpsc::RecvTimeoutError::Timeout) if started.elapsed() >= START_TIMEOUT => {
                break Err(format!("printed nothing within {START_TIMEOUT:?}"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    };
    match outcome {
        Ok(urls) => Ok((child, stdin, urls)),
        Err(reason) => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            Err(format!("interop/server.js did not start: {reason}\n{log}"))
        }
    }
}

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// Says why the suite is skipped, once, on the real stderr: libtest captures `eprintln!` of
/// passing tests, and a skip must not be silent.
pub fn skipped(reason: &str) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(std::io::stderr(), "interop: skipped: {reason}");
    });
}

impl Interop {
    /// Starts a server, or returns `None` (after printing why) when Node.js or the npm packages
    /// are missing and `INTEROP_REQUIRED` is not `1`.
    pub fn start(lifetimes: Lifetimes) -> Option<Self> {
        if let Some(reason) = missing() {
            assert!(!required(), "INTEROP_REQUIRED=1 but {reason}");
            skipped(&reason);
            return None;
        }
        Some(Self::spawn(lifetimes))
    }

    fn spawn(lifetimes: Lifetimes) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tower-auth-refresh-interop-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();

        // The private_key_jwt client's key pairs: the public halves are registered, the
        // private halves stay in memory for the test.
        let keys: serde_json::Value =
            serde_json::from_str(&run_node(&interop_dir().join("keygen.js"))).unwrap();

        let mut secrets: HashMap<ClientKind, String> = ClientKind::ALL
            .into_iter()
            .filter(|kind| !matches!(kind, ClientKind::Public | ClientKind::PrivateKeyJwt))
            .map(|kind| (kind, random_secret()))
            .collect();
        // RFC 6749 §2.3.1: Basic form-urlencodes the secret first; make that matter, with
        // characters of VSCHAR (Appendix A), all a client secret may have.
        secrets
            .entry(ClientKind::Basic)
            .and_modify(|secret| secret.push_str(":+%& /"));
        let password = random_secret();
        let username = "interop-reader".to_owned();

        let refreshing = ["password", "refresh_token"];
        let client = |kind: ClientKind, method: &str, grants: &[&str]| {
            json!({
                "client_id": kind.id(),
                "token_endpoint_auth_method": method,
                "grant_types": grants,
                "response_types": [],
                "redirect_uris": [],
            })
        };
        let with_secret = |mut value: serde_json::Value, kind: ClientKind| {
            value["client_secret"] = json!(secrets[&kind]);
            value
        };
        let mut narrow = with_secret(
            client(ClientKind::Narrow, "client_secret_post", &refreshing),
            ClientKind::Narrow,
        );
        narrow["scope"] = json!(NARROW_SCOPE);
        let mut private_key_jwt = client(ClientKind::PrivateKeyJwt, "private_key_jwt", &refreshing);
        // Both keys, no algorithm pinned: ES256 and RS256 assertions are both checked.
        private_key_jwt["jwks"] = json!({ "keys": [keys["public_jwk"], keys["rsa_public_jwk"]] });
        let mut dpop = with_secret(
            client(
                ClientKind::Dpop,
                "client_secret_post",
                &["password", "refresh_token", "client_credentials"],
            ),
            ClientKind::Dpop,
        );
        dpop["dpop_bound_access_tokens"] = json!(true);

        let config = json!({
            "accessTokenTtl": lifetimes.access,
            "refreshTokenTtl": lifetimes.refresh,
            "clientCredentialsTtl": lifetimes.client_credentials,
            "user": { "username": username, "password": password },
            "enforceBasic": [ClientKind::Basic.id()],
            "dpopNonce": [ClientKind::Dpop.id()],
            "apiDpopNonce": true,
            "clients": [
                with_secret(
                    client(ClientKind::Post, "client_secret_post",
                        &["password", "refresh_token", "client_credentials"]),
                    ClientKind::Post,
                ),
                with_secret(
                    client(ClientKind::Basic, "client_secret_basic", &refreshing),
                    ClientKind::Basic,
                ),
                private_key_jwt,
                client(ClientKind::Public, "none", &refreshing),
                narrow,
                dpop,
            ],
        });
        let config_path = dir.join("config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

        // One restart when the first start fails: the child's start is the harness's, not the
        // crate's, and a stalled machine must not fail the suite. The first failure is printed
        // (uncaptured), so a start that fails every time still shows each reason.
        let (child, stdin, urls) =
            launch(&config_path, &dir, "server.log").unwrap_or_else(|first| {
                let _ = writeln!(std::io::stderr(), "interop: restarting the server: {first}");
                launch(&config_path, &dir, "server-restart.log")
                    .unwrap_or_else(|second| panic!("{first}\nand again: {second}"))
            });
        Self {
            child,
            stdin: Some(stdin),
            dir,
            urls,
            username,
            password,
            ec_private_pem: keys["private_pem"].as_str().unwrap().to_owned(),
            rsa_private_jwk: keys["rsa_private_jwk"].to_string(),
            secrets,
            control: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn client_secret(&self, kind: ClientKind) -> &str {
        &self.secrets[&kind]
    }

    /// A refresher builder for `kind` with its secret (if it has one), the user's password,
    /// [`SCOPE`] and the revocation endpoint.
    pub fn refresher(&self, kind: ClientKind) -> OAuth2RefresherBuilder {
        let mut builder = OAuth2Refresher::builder(&self.urls.token, kind.id())
            .password(&self.username, self.password.as_str())
            .scope(SCOPE)
            .revocation_url(&self.urls.revocation);
        if let Some(secret) = self.secrets.get(&kind) {
            builder = builder.client_secret(secret.as_str());
        }
        builder
    }

    /// The protected API's URL for `path`.
    pub fn api(&self, path: &str) -> String {
        format!("{}{path}", self.urls.api)
    }

    async fn call(&self, method: Method, path: &str) -> serde_json::Value {
        self.fetch(method, &format!("{}{path}", self.urls.control))
            .await
    }

    /// The server's OpenID Connect discovery document.
    pub async fn discovery(&self) -> serde_json::Value {
        self.fetch(Method::GET, &self.urls.discovery).await
    }

    async fn fetch(&self, method: Method, url: &str) -> serde_json::Value {
        let request = Request::builder()
            .method(method)
            .uri(url)
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = self
            .control
            .request(request)
            .await
            .expect("the interop server");
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }

    pub async fn stats(&self) -> Stats {
        serde_json::from_value(self.call(Method::GET, "/stats").await).unwrap()
    }

    /// Deletes every access token (and client-credentials token); returns how many.
    pub async fn revoke_access_tokens(&self) -> u64 {
        self.call(Method::POST, "/revoke-access-tokens").await["revoked"]
            .as_u64()
            .unwrap()
    }

    /// Deletes every refresh token; returns how many.
    pub async fn revoke_refresh_tokens(&self) -> u64 {
        self.call(Method::POST, "/revoke-refresh-tokens").await["revoked"]
            .as_u64()
            .unwrap()
    }

    /// A new API nonce: proofs with the one before are still taken.
    #[cfg_attr(not(feature = "dpop"), allow(dead_code))]
    pub async fn rotate_api_dpop_nonce(&self) {
        self.call(Method::POST, "/rotate-api-dpop-nonce").await;
    }

    /// Makes every refresh token expired; returns how many.
    pub async fn expire_refresh_tokens(&self) -> u64 {
        self.call(Method::POST, "/expire-refresh-tokens").await["expired"]
            .as_u64()
            .unwrap()
    }

    /// The server's log (oidc-provider's warnings), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Interop {
    fn drop(&mut self) {
        // Closing stdin asks the server to exit; the kill makes sure.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
