//! HTTPS on loopback: a TLS front (a certificate made by rcgen) for the identity provider and
//! the API, the layer over `https_client_with` for any body type, and the README's quick start
//! run as written.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceBuilder;
use tower_auth_refresh::AuthLayer;
use tower_auth_refresh::oauth2::{OAuth2Refresher, https_client, https_client_with};
use tower_auth_refresh::replay::{BufferBody, ReplayBody};
use tower_auth_refresh::test_util::{Api, ChunkedBody, IdentityProvider};

use super::servers;

mod quick_start {
    #![allow(dead_code)] // used by one test only
    include!("quick_start.rs");

    /// The README's function, callable from the test.
    pub(super) async fn run(token_url: &str, api: &str) -> Result<StatusCode, BoxError> {
        me(token_url, api).await
    }
}

/// A self-signed certificate for 127.0.0.1, what a server presents and a client trusts.
struct Tls {
    certificate: CertificateDer<'static>,
    pem: String,
    server: Arc<rustls::ServerConfig>,
}

impl Tls {
    fn new() -> Tls {
        let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let certificate = generated.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certificate.clone()], key)
            .unwrap();
        Tls {
            certificate,
            pem: generated.cert.pem(),
            server: Arc::new(server),
        }
    }

    /// A client configuration that trusts this certificate only.
    fn client(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.certificate.clone()).unwrap();
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth()
    }

    /// Accepts TLS on a new port of 127.0.0.1 and forwards the plain bytes to `target`.
    async fn front(&self, target: SocketAddr) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(Arc::clone(&self.server));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Ok(mut plain) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        address
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The provider's token URL and the API's origin, both behind TLS fronts.
async fn https_urls(tls: &Tls, idp: &IdentityProvider, api: &Api) -> (String, String) {
    let idp_front = tls.front(idp.addr()).await;
    let api_front = tls.front(api.addr()).await;
    let token_url = idp.token_url().replace(
        &format!("http://{}", idp.addr()),
        &format!("https://{idp_front}"),
    );
    (token_url, format!("https://{api_front}"))
}

// `https_client_with` is generic over the body: under `BufferBody` it carries `ReplayBody`s,
// so a streaming POST rejected with 401 is retried over HTTPS with its whole body.
#[tokio::test]
async fn buffered_streaming_bodies_are_replayed_over_https() {
    let (idp, api) = servers().await;
    let tls = Tls::new();
    let (token_url, api_url) = https_urls(&tls, &idp, &api).await;
    let config = idp.config();
    let refresher = OAuth2Refresher::builder(token_url, config.client_id())
        .client_secret(config.client_secret())
        .password(config.username(), config.password())
        .build(https_client_with(tls.client()).unwrap())
        .unwrap();
    let layer = AuthLayer::new(refresher).replay_policy(BufferBody::default());
    layer.handle().token().await.unwrap();
    let client = ServiceBuilder::new()
        .layer(layer)
        .service(https_client_with::<ReplayBody<ChunkedBody>>(tls.client()).unwrap());

    idp.revoke_access_tokens();
    let body = ChunkedBody::new([Bytes::from_static(b"{\"part\":"), Bytes::from_static(b"2}")]);
    let request = Request::post(format!("{api_url}/echo")).body(body).unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echoed = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed, "{\"part\":2}");
    assert_eq!(api.stats().echo_bodies, [echoed]);
    assert_eq!(api.stats().unauthorized, 1);
    assert_eq!(idp.stats().refresh_grants, 1);
}

// The TLS is real: `https_client` does not trust the loopback certificate, and says so.
#[tokio::test]
async fn an_untrusted_certificate_is_an_error_not_a_request() {
    let (idp, api) = servers().await;
    let tls = Tls::new();
    let (_, api_url) = https_urls(&tls, &idp, &api).await;
    let client = https_client::<Full<Bytes>>().unwrap();
    let request = Request::get(format!("{api_url}/auth/check"))
        .body(Full::default())
        .unwrap();
    let error = client.request(request).await.unwrap_err();
    let chain = std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    assert!(chain.contains("certificate"), "{chain}");
    assert_eq!(api.stats().requests, 0);
}

/// Set in the child process that runs the README's code: `<token url> <api origin>`.
const CHILD: &str = "QUICK_START_URLS";

// The README's quick start, exactly as printed there (the first test checks that), run against
// the loopback servers behind TLS. It reads the system's roots (feature
// `rustls-native-roots`), so it runs in a child process whose `SSL_CERT_FILE` is the loopback
// certificate: changing this process's environment would race the other tests.
#[cfg(feature = "rustls-native-roots")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quick_start_runs_over_https() {
    if let Ok(urls) = std::env::var(CHILD) {
        let (token_url, api) = urls.split_once(' ').unwrap();
        assert_eq!(
            quick_start::run(token_url, api).await.unwrap(),
            StatusCode::OK
        );
        return;
    }
    let (idp, api) = servers().await;
    let tls = Tls::new();
    let (token_url, api_url) = https_urls(&tls, &idp, &api).await;
    let directory = std::env::temp_dir().join(format!("quick-start-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let ca = directory.join("ca.pem");
    std::fs::write(&ca, &tls.pem).unwrap();

    let config = idp.config();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", "https::the_readme_quick_start_runs_over_https"])
        .env(CHILD, format!("{token_url} {api_url}"))
        .env("SSL_CERT_FILE", &ca)
        .env_remove("SSL_CERT_DIR")
        .env("MANGADEX_CLIENT_ID", config.client_id())
        .env("MANGADEX_CLIENT_SECRET", config.client_secret())
        .env("MANGADEX_USERNAME", config.username())
        .env("MANGADEX_PASSWORD", config.password());
    let output = tokio::task::spawn_blocking(move || child.output())
        .await
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&directory);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran the test: {stdout}"
    );
    assert_eq!(
        idp.stats().password_grants,
        1,
        "the child logged in over HTTPS"
    );
    assert_eq!(api.stats().ok, 1, "and called the API over HTTPS");
}

// The README's quick start is `tests/sdks/quick_start.rs`, character for character.
#[test]
fn the_readme_quick_start_is_the_code_under_test() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("## Quick start").expect("a quick start")..];
    let start = section.find("```rust,no_run\n").expect("a code block") + "```rust,no_run\n".len();
    let block = &section[start..start + section[start..].find("```\n").unwrap()];
    assert_eq!(block, include_str!("quick_start.rs"));
}
