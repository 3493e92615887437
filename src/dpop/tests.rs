//! Proofs name their request, carry their origin's nonce, and are never the same twice; clones
//! share the key and the nonces; nothing secret is shown.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::*;

fn uri(text: &str) -> Uri {
    text.parse().unwrap()
}

fn claims(proof: &HeaderValue) -> Value {
    let payload = proof.to_str().unwrap().split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn nonce_headers(nonce: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("dpop-nonce", HeaderValue::from_static(nonce));
    headers
}

#[test]
fn a_proof_names_its_request() {
    let dpop = Dpop::generate().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let proof = dpop
        .proof(
            &Method::DELETE,
            &uri("https://API.example.com:443/items/7?force=1#top"),
            Some("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
        )
        .unwrap();
    assert!(proof.is_sensitive());
    let named = claims(&proof);
    assert_eq!(named["htm"], "DELETE");
    assert_eq!(named["htu"], "https://api.example.com/items/7");
    assert_eq!(named["ath"], "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo");
    let iat = named["iat"].as_u64().unwrap();
    assert!(iat.abs_diff(now) <= 2, "{iat} against {now}");
    assert_eq!(named["jti"].as_str().unwrap().len(), 22, "128 bits");
    assert!(named.get("nonce").is_none());
    // A token request: no ath.
    let token = dpop
        .proof(&Method::POST, &uri("https://idp.example/token"), None)
        .unwrap();
    assert!(claims(&token).get("ath").is_none());
    assert_eq!(
        dpop.proof(&Method::GET, &uri("/relative"), None)
            .unwrap_err()
            .kind(),
        DpopErrorKind::Uri
    );
}

#[test]
fn every_proof_is_new() {
    let dpop = Dpop::generate_ed25519().unwrap();
    let target = uri("https://api.example.com/me");
    let mut jtis = HashSet::new();
    let mut proofs = HashSet::new();
    for _ in 0..500 {
        let proof = dpop.proof(&Method::GET, &target, Some("at")).unwrap();
        assert!(jtis.insert(claims(&proof)["jti"].as_str().unwrap().to_owned()));
        assert!(proofs.insert(proof));
    }
    assert_eq!(dpop.stats().proofs, 500);
}

#[test]
fn nonces_follow_their_origin_and_every_clone() {
    let dpop = Dpop::generate().unwrap();
    let idp = uri("https://idp.example/realms/r/token");
    let api = uri("https://api.example/v1/me");
    let clone = dpop.clone();
    clone.observe(&idp, &nonce_headers("as-nonce-1"));
    // The same origin written another way shares the nonce; another origin does not.
    let same_origin = uri("HTTPS://IDP.example:443/other?x");
    assert_eq!(dpop.nonce(&same_origin).as_deref(), Some("as-nonce-1"));
    assert_eq!(dpop.nonce(&api), None);
    assert_eq!(dpop.nonce(&uri("http://idp.example/token")), None, "http");
    let proof = dpop.proof(&Method::POST, &idp, None).unwrap();
    assert_eq!(claims(&proof)["nonce"], "as-nonce-1");
    let to_api = dpop.proof(&Method::GET, &api, Some("at")).unwrap();
    assert!(claims(&to_api).get("nonce").is_none());
    // A success may bring the next nonce.
    dpop.observe(&idp, &nonce_headers("as-nonce-2"));
    dpop.observe(&idp, &nonce_headers("as-nonce-2"));
    let (proof, used) = clone.proof_with_nonce(&Method::POST, &idp, None).unwrap();
    assert_eq!(claims(&proof)["nonce"], "as-nonce-2");
    assert_eq!(used.as_deref(), Some("as-nonce-2"));
    assert_eq!(dpop.stats().nonces, 2, "a nonce seen again is not new");
    // Relative URIs have no origin: nothing is kept for them.
    dpop.observe(&uri("/x"), &nonce_headers("lost"));
    assert_eq!(dpop.stats().nonces, 2);
}

#[test]
fn set_key_switches_every_clone_and_keeps_the_nonces() {
    let layer = Dpop::generate().unwrap();
    let refresher = layer.clone();
    let idp = uri("https://idp.example/token");
    layer.observe(&idp, &nonce_headers("n"));
    let session = Dpop::generate_ed25519().unwrap();
    assert_ne!(layer.thumbprint(), session.thumbprint());
    layer.set_key(&session);
    assert_eq!(refresher.thumbprint(), session.thumbprint());
    assert_eq!(refresher.algorithm(), "EdDSA");
    assert_eq!(refresher.public_jwk(), session.public_jwk());
    let proof = refresher.proof(&Method::POST, &idp, None).unwrap();
    assert_eq!(claims(&proof)["nonce"], "n");
    let header = proof.to_str().unwrap().split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["jwk"], session.public_jwk());
    // The session's own value keeps no nonce of the layer's.
    assert_eq!(session.nonce(&idp), None);
}

#[test]
fn the_key_round_trips_and_is_never_shown() {
    let dpop = Dpop::generate().unwrap();
    let jwk = dpop.to_private_jwk().unwrap();
    let d = serde_json::from_str::<Value>(jwk.secret()).unwrap()["d"]
        .as_str()
        .unwrap()
        .to_owned();
    let back = Dpop::from_private_jwk(&jwk).unwrap();
    assert_eq!(back.thumbprint(), dpop.thumbprint());
    let error = Dpop::from_jwk(&jwk.secret().replace("P-256", "P-521")).unwrap_err();
    let shown = format!(
        "{dpop:?} {dpop:#?} {back:?} {jwk:?} {:?} {error} {error:?} {:?}",
        dpop.stats(),
        dpop.proof(&Method::GET, &uri("https://a.example/"), None)
    );
    assert!(!shown.contains(&d), "{shown}");
    assert!(shown.contains(&dpop.thumbprint()), "{shown}");
    assert!(shown.contains("ES256"), "{shown}");
}

#[test]
fn challenges_are_told_from_token_rejections() {
    let mut headers = HeaderMap::new();
    headers.insert(
        "www-authenticate",
        HeaderValue::from_static(r#"DPoP error="invalid_dpop_proof", algs="ES256""#),
    );
    assert!(Dpop::is_challenge(StatusCode::UNAUTHORIZED, &headers));
    assert_eq!(
        Dpop::challenge(StatusCode::UNAUTHORIZED, &headers),
        Some(DpopChallenge::InvalidProof)
    );
    headers.insert(
        "www-authenticate",
        HeaderValue::from_static(r#"DPoP error="invalid_token""#),
    );
    assert!(!Dpop::is_challenge(StatusCode::UNAUTHORIZED, &headers));
}

#[test]
fn is_send_sync_static() {
    fn assert<T: Send + Sync + 'static>() {}
    assert::<Dpop>();
    assert::<DpopError>();
}
