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
//!
//! ```sh
//! cargo bench --features dpop --bench dpop                  # full run
//! cargo bench --features dpop --bench dpop -- --quick       # short run, the table included
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use criterion::Criterion;
use http::{Method, Uri};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::Value;
use tower_auth_refresh::dpop::Dpop;

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

fn ratio_table(length: Length, variants: &[Variant]) {
    let (rounds, count) = match length {
        Length::Test => (3, 10),
        Length::Quick => (60, 200),
        Length::Full => (300, 500),
    };
    println!(
        "\ndpop/ratios: medians of {rounds} rounds; per round each variant signs {count} proofs, in rotating order"
    );
    println!(
        "{:<20} {:>10} {:>17} {:>16} {:>22}",
        "variant", "ns/proof", "ns quartiles", "ratio to sign", "ratio quartiles"
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
        // Each against the bare signature of its own curve.
        let baseline = if name.ends_with("eddsa") { 4 } else { 1 };
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
        ratio_table(args.length, &variants);
    }
}
