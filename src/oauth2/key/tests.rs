//! Keys read from every format sign assertions the public key verifies; bad keys are typed errors.

use std::collections::HashSet;

use aws_lc_rs::encoding::{AsBigEndian as _, AsDer};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Value, json};

use super::*;

const AUDIENCE: &str = "https://idp.example/realms/demo/protocol/openid-connect/token";

fn pem_of(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

fn p256() -> EcdsaKeyPair {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap()
}

/// Verifies an assertion with the public key and returns its header and claims.
fn verify(assertion: &str, public: &DecodingKey, alg: Algorithm) -> (Value, Value) {
    let mut validation = Validation::new(alg);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&["client-1"]);
    let data = jsonwebtoken::decode::<Value>(assertion, public, &validation)
        .unwrap_or_else(|error| panic!("{error}: {assertion}"));
    let header = serde_json::to_value(&data.header).unwrap();
    (header, data.claims)
}

fn ec_public(pair: &EcdsaKeyPair) -> DecodingKey {
    let point = pair.public_key().as_ref();
    let (x, y) = point[1..].split_at(32);
    DecodingKey::from_ec_components(&URL_SAFE_NO_PAD.encode(x), &URL_SAFE_NO_PAD.encode(y)).unwrap()
}

#[test]
fn an_ec_key_from_pem_der_sec1_and_jwk_signs_verifiable_assertions() {
    let pair = p256();
    let pkcs8 = pair.to_pkcs8v1().unwrap();
    let sec1 = pair.private_key().as_der().unwrap();
    let point = pair.public_key().as_ref();
    let d = pair.private_key().as_be_bytes().unwrap();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "jwk-kid",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        "d": URL_SAFE_NO_PAD.encode(d.as_ref()),
    })
    .to_string();
    let sec1_pem = format!(
        "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
        pem_of("EC PRIVATE KEY", sec1.as_ref())
    );
    let keys = [
        ClientKey::from_pem(pem_of("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).unwrap(),
        ClientKey::from_der(pkcs8.as_ref()).unwrap(),
        ClientKey::from_der(sec1.as_ref()).unwrap(),
        ClientKey::from_pem(sec1_pem.as_bytes()).unwrap(),
        ClientKey::from_jwk(&jwk).unwrap(),
    ];
    let public = ec_public(&pair);
    let mut jtis = HashSet::new();
    for key in keys {
        assert_eq!(key.algorithm(), SigningAlgorithm::Es256);
        for _ in 0..2 {
            let assertion = key.assertion("client-1", AUDIENCE).unwrap();
            let (header, claims) = verify(&assertion, &public, Algorithm::ES256);
            assert_eq!(header["alg"], "ES256");
            assert_eq!(claims["sub"], "client-1");
            assert_eq!(
                claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
                60
            );
            assert!(
                jtis.insert(claims["jti"].as_str().unwrap().to_owned()),
                "jti reused"
            );
        }
    }
    let jwk_key = ClientKey::from_jwk(&jwk).unwrap();
    let (header, _) = verify(
        &jwk_key.assertion("client-1", AUDIENCE).unwrap(),
        &public,
        Algorithm::ES256,
    );
    assert_eq!(header["kid"], "jwk-kid");
    let with_thumbprint = jwk_key.x509_thumbprint_sha256("dGh1bWJwcmludA");
    let (header, _) = verify(
        &with_thumbprint.assertion("client-1", AUDIENCE).unwrap(),
        &public,
        Algorithm::ES256,
    );
    assert_eq!(header["x5t#S256"], "dGh1bWJwcmludA");
}

#[test]
fn an_rsa_key_signs_rs256() {
    let pair = RsaPair::generate(KeySize::Rsa2048).unwrap();
    let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'_>>::as_der(&pair).unwrap();
    let public = pair.public_key().as_ref().to_vec();
    let key = ClientKey::from_pem(pem_of("PRIVATE KEY", pkcs8.as_ref()).as_bytes())
        .unwrap()
        .key_id("rsa-1");
    assert_eq!(key.algorithm(), SigningAlgorithm::Rs256);
    let assertion = key.assertion("client-1", AUDIENCE).unwrap();
    let (header, claims) = verify(
        &assertion,
        &DecodingKey::from_rsa_der(&public),
        Algorithm::RS256,
    );
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("RS256"), Some("rsa-1"))
    );
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(
        ClientKey::from_der(pkcs8.as_ref()).unwrap().algorithm(),
        SigningAlgorithm::Rs256
    );
}

#[test]
fn keys_that_cannot_sign_are_config_errors_not_panics() {
    let pair = p256();
    let point = pair.public_key().as_ref();
    let public_jwk = json!({
        "kty": "EC", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    });
    let mut wrong_alg = public_jwk.clone();
    wrong_alg["d"] =
        json!(URL_SAFE_NO_PAD.encode(pair.private_key().as_be_bytes().unwrap().as_ref()));
    wrong_alg["alg"] = json!("RS256");
    let mut wrong_d = public_jwk.clone();
    wrong_d["d"] = json!(URL_SAFE_NO_PAD.encode([7u8; 32]));
    for jwk in [
        public_jwk.to_string(),
        wrong_alg.to_string(),
        wrong_d.to_string(),
        r#"{"kty":"oct","k":"c2VjcmV0"}"#.to_owned(),
        r#"{"kty":"RSA","n":"AQAB","e":"AQAB","d":"AQAB"}"#.to_owned(),
        "not json".to_owned(),
    ] {
        let error = ClientKey::from_jwk(&jwk).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config, "{jwk}: {error}");
    }
    let public_pem = pem_of("PUBLIC KEY", point);
    for pem in [
        public_pem.as_str(),
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        "not pem at all",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ] {
        let error = ClientKey::from_pem(pem.as_bytes()).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config, "{pem}: {error}");
    }
    assert!(ClientKey::from_der(b"\x30\x03\x02\x01\x00").is_err());
}

#[test]
fn debug_shows_nothing_of_the_key() {
    let pair = p256();
    let d = URL_SAFE_NO_PAD.encode(pair.private_key().as_be_bytes().unwrap().as_ref());
    let pkcs8 = pair.to_pkcs8v1().unwrap();
    let key = ClientKey::from_der(pkcs8.as_ref()).unwrap().key_id("kid-7");
    let shown = format!("{key:?}");
    assert_eq!(
        shown,
        r#"ClientKey { algorithm: "ES256", key_id: Some("kid-7"), x5t#S256: None, .. }"#
    );
    assert!(!shown.contains(&d));
}
