//! What a DPoP proof costs, against baselines measured in the same run.
//!
//! - `dpop/*` (criterion): time per proof. `proof_es256` is `Dpop::proof` for a GET with an
//!   access token (so `ath` too), against `sign_es256`, the bare ECDSA P-256 signature of a
//!   signing input of the same length by aws-lc-rs (the floor: no claims, no encoding), and
//!   `jsonwebtoken_es256`, the same header and claims through `jsonwebtoken::encode` (what
//!   the JOSE crate does when asked). The same for Ed25519 (`proof_eddsa`, `sign_eddsa`).
//! - `dpop/ratios` (table): the variants take turns, in rotating order, each signing a chunk
//!   per round; the medians of the per-round times and ratios, and their quartiles, which the
//!   load of a shared machine disturbs far less than two measurements taken seconds apart.
//! - `dpop/requests` (table, same method): a whole request through `AuthService` (a trivial
//!   inner service that answers at once, the request built in the loop) with a DPoP token,
//!   against the same layer with a Bearer token and against tower-http's `AddAuthorization`,
//!   and the proof alone for the same request: what DPoP adds to a request, and how much of
//!   it is the proof.
//!
//! ```sh
//! cargo bench --features dpop --bench dpop                  # full run
//! cargo bench --features dpop --bench dpop -- --quick       # short run, the table included
//! ```

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use bytes::Bytes;
use criterion::Criterion;
use http::{Method, Request, Response, Uri};
use http_body_util::Full;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::Value;
use tower::{Layer, Service, service_fn};
use tower_auth_refresh::dpop::Dpop;
use tower_auth_refresh::{AuthLayer, RefreshRequest, TokenSet, TokenType};
use tower_http::auth::AddAuthorizationLayer;

/// A JWT-sized access token, as MangaDex's (Keycloak's) are.
const ACCESS_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsInR5cCIgOiAiSldUIiwia2lkIiA6ICJmYWtlIn0.eyJleHAiOjE3MDAwMDAwMDAsImlhdCI6MTY5OTk5OTEwMCwianRpIjoiMWI0ZTI4YmEtMmZhMS00MWQyLTg4M2YtMDAxNmQzY2NhNDI3IiwiaXNzIjoiaHR0cHM6Ly9hdXRoLm1hbmdhZGV4Lm9yZy9yZWFsbXMvbWFuZ2FkZXgiLCJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl";

fn uri() -> Uri {
    "https://api.mangadex.org/user/me?includes[]=roles"
        .parse()
        .unwrap()
}

/// One way of making a proof.
type Variant = (&'static str, Box<dyn Fn() -> usize>);

/// The proof's signing input, for the bare signatures: header and claims as `Dpop` makes them.
fn signing_input(dpop: &Dpop) -> Vec<u8> {
    let proof = dpop
        .proof(&Method::GET, &uri(), Some(ACCESS_TOKEN))
        .unwrap();
    let proof = proof.to_str().unwrap();
    proof.as_bytes()[..proof.rfind('.').unwrap()].to_vec()
}

/// jsonwebtoken's encode of the same header and claims, with the key given as PKCS#8.
fn jsonwebtoken_variant(dpop: &Dpop, pair: &EcdsaKeyPair) -> Box<dyn Fn() -> usize> {
    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.typ = Some("dpop+jwt".to_owned());
    header.jwk = Some(serde_json::from_value(dpop.public_jwk()).unwrap());
    let key = EncodingKey::from_ec_der(pair.to_pkcs8v1().unwrap().as_ref());
    let proof = dpop
        .proof(&Method::GET, &uri(), Some(ACCESS_TOKEN))
        .unwrap();
    let claims: Value = {
        use base64::Engine as _;
        let payload = proof
            .to_str()
            .unwrap()
            .split('.')
            .nth(1)
            .unwrap()
            .to_owned();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    Box::new(move || jsonwebtoken::encode(&header, &claims, &key).unwrap().len())
}

/// The variants: each returns the length of what it made, so that nothing is optimised away.
fn variants() -> Vec<Variant> {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let es256 = dpop_of(&pair);
    let ed_pair = Ed25519KeyPair::generate().unwrap();
    let eddsa = Dpop::generate_ed25519().unwrap();
    let (es_input, ed_input) = (signing_input(&es256), signing_input(&eddsa));
    let jsonwebtoken = jsonwebtoken_variant(&es256, &pair);
    let rng = SystemRandom::new();
    vec![
        (
            "proof_es256",
            Box::new(move || {
                let proof = es256.proof(&Method::GET, &uri(), Some(ACCESS_TOKEN));
                proof.unwrap().len()
            }),
        ),
        (
            "sign_es256",
            Box::new(move || pair.sign(&rng, &es_input).unwrap().as_ref().len()),
        ),
        ("jsonwebtoken_es256", jsonwebtoken),
        (
            "proof_eddsa",
            Box::new(move || {
                let proof = eddsa.proof(&Method::GET, &uri(), Some(ACCESS_TOKEN));
                proof.unwrap().len()
            }),
        ),
        (
            "sign_eddsa",
            Box::new(move || ed_pair.sign(&ed_input).as_ref().len()),
        ),
    ]
}

/// The same P-256 key as the baselines sign with, through the public PEM reader.
fn dpop_of(pair: &EcdsaKeyPair) -> Dpop {
    let der = pair.to_pkcs8v1().unwrap();
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()));
    Dpop::from_pem(pem.as_bytes()).unwrap()
}

fn criterion_benches(criterion: &mut Criterion, variants: &[Variant]) {
    let mut group = criterion.benchmark_group("dpop");
    for (name, variant) in variants {
        group.bench_function(*name, |bencher| bencher.iter(|| black_box(variant())));
    }
    group.finish();
}

/// The median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn quartiles(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[values.len() / 4], values[values.len() * 3 / 4])
}

fn time(variant: &dyn Fn() -> usize, count: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..count {
        black_box(variant());
    }
    started.elapsed()
}

/// The table of `variants` (`title`: what it is, `unit`: what one call makes), each
/// variant's ratio taken to the variant `baseline(name)` of the same round.
fn ratio_table(
    length: Length,
    (title, unit, against): (&str, &str, &str),
    variants: &[Variant],
    baseline: fn(&str) -> usize,
) {
    let (rounds, count) = match length {
        Length::Test => (3, 10),
        Length::Quick => (60, 200),
        Length::Full => (300, 500),
    };
    println!(
        "\n{title}: medians of {rounds} rounds; per round each variant makes {count} {unit}s, in rotating order"
    );
    println!(
        "{:<20} {:>10} {:>17} {:>16} {:>22}",
        "variant",
        format!("ns/{unit}"),
        "ns quartiles",
        format!("ratio to {against}"),
        "ratio quartiles"
    );
    // nanos[variant][round]
    let mut nanos = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        for turn in 0..variants.len() {
            let index = (turn + round) % variants.len();
            let elapsed = time(&*variants[index].1, count);
            nanos[index].push(elapsed.as_nanos() as f64 / count as f64);
        }
    }
    for (index, (name, _)) in variants.iter().enumerate() {
        let baseline = baseline(name);
        let mut ratios: Vec<f64> = nanos[index]
            .iter()
            .zip(&nanos[baseline])
            .map(|(nanos, baseline)| nanos / baseline)
            .collect();
        let (q1, q3) = quartiles(&mut nanos[index].clone());
        let (r1, r3) = quartiles(&mut ratios);
        println!(
            "{:<20} {:>10.0} {:>17} {:>16.2} {:>22}",
            name,
            median(&mut nanos[index].clone()),
            format!("{q1:.0}–{q3:.0}"),
            median(&mut ratios),
            format!("{r1:.2}–{r3:.2}"),
        );
    }
}

type Body = Full<Bytes>;

/// The API: answers at once.
fn api() -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = Ready<Result<Response<Body>, Infallible>>,
> + Clone
+ 'static {
    service_fn(|_: Request<Body>| ready(Ok(Response::new(Body::default()))))
}

/// A request through `service`, built here as a user's code builds it; its future must be
/// ready at once (a valid token, an API that answers at once).
fn send<S>(service: &RefCell<S>) -> usize
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: std::fmt::Debug,
{
    let request = Request::get(uri()).body(Body::default()).unwrap();
    let mut service = service.borrow_mut();
    let mut cx = Context::from_waker(Waker::noop());
    assert!(service.poll_ready(&mut cx).is_ready());
    let mut future = std::pin::pin!(service.call(request));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(response) => black_box(response.unwrap()).status().as_u16().into(),
        Poll::Pending => panic!("the request must not wait"),
    }
}

/// A layer holding `tokens`, valid for an hour.
fn layer_with(tokens: TokenSet) -> AuthLayer {
    let refresher =
        service_fn(|_: RefreshRequest| async { Ok::<_, Infallible>(TokenSet::new("unused")) });
    let layer = AuthLayer::new(refresher);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let tokens = tokens.with_expires_in(Duration::from_secs(3600));
    runtime.block_on(layer.handle().set_tokens(tokens)).unwrap();
    layer
}

/// Whole requests: `AddAuthorization`, the layer with a Bearer token, with DPoP tokens.
fn requests() -> Vec<Variant> {
    let bearer = layer_with(TokenSet::new(ACCESS_TOKEN));
    let dpop = |key: Dpop| {
        let tokens = TokenSet::new(ACCESS_TOKEN)
            .with_token_type(TokenType::DPoP)
            .with_dpop(key);
        layer_with(tokens)
    };
    let (es256_key, eddsa_key) = (Dpop::generate().unwrap(), Dpop::generate_ed25519().unwrap());
    let (es256, eddsa) = (dpop(es256_key.clone()), dpop(eddsa_key.clone()));
    let proof_alone = |key: Dpop| -> Box<dyn Fn() -> usize> {
        Box::new(move || {
            key.proof(&Method::GET, &uri(), Some(ACCESS_TOKEN))
                .unwrap()
                .len()
        })
    };
    let variant = |service| -> Box<dyn Fn() -> usize> {
        let service = RefCell::new(service);
        Box::new(move || send(&service))
    };
    let add_authorization = RefCell::new(AddAuthorizationLayer::bearer(ACCESS_TOKEN).layer(api()));
    vec![
        (
            "add_authorization",
            Box::new(move || send(&add_authorization)),
        ),
        ("bearer_request", variant(bearer.layer(api()))),
        ("dpop_request_es256", variant(es256.layer(api()))),
        ("dpop_request_eddsa", variant(eddsa.layer(api()))),
        ("proof_alone_es256", proof_alone(es256_key)),
        ("proof_alone_eddsa", proof_alone(eddsa_key)),
    ]
}

// The arguments: criterion's, read again for the table it does not run.
#[path = "support/args.rs"]
mod args;
use args::{Args, Length};

fn main() {
    let args = Args::parse();
    let variants = variants();
    let mut criterion = Criterion::default().configure_from_args();
    criterion_benches(&mut criterion, &variants);
    criterion.final_summary();
    if args.wants("dpop/ratios") {
        // Each against the bare signature of its own curve.
        let bare_signature = |name: &str| if name.ends_with("eddsa") { 4 } else { 1 };
        let title = ("dpop/ratios", "proof", "sign");
        ratio_table(args.length, title, &variants, bare_signature);
    }
    if args.wants("dpop/requests") {
        let title = ("dpop/requests", "request", "bearer");
        ratio_table(args.length, title, &requests(), |_| 1);
    }
}
