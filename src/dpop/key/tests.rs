//! Keys from every source sign proofs their own header's key verifies, with the RFC 7638
//! thumbprint; unusable keys are typed errors, never a panic.

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeyPair as RsaPair, KeySize};
use aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING;
use base64::Engine as _;
use jsonwebtoken::DecodingKey;
use serde_json::{Value, json};

use super::*;

fn pem_of(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs a message as a proof would, and checks the signature with the header's own `jwk`
/// (jsonwebtoken's aws-lc-rs verifier, not this module's code); returns the header.
fn verified_header(key: &Key) -> Value {
    let signing_input = format!("{}.{}", key.header(), b64(b"{}"));
    let signature = key.sign(signing_input.as_bytes()).unwrap();
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(key.header()).unwrap()).unwrap();
    let jwk: Jwk = serde_json::from_value(header["jwk"].clone()).unwrap();
    let public = DecodingKey::from_jwk(&jwk).unwrap();
    let alg = match header["alg"].as_str().unwrap() {
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        other => panic!("alg {other}"),
    };
    let verifier =
        (jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.verifier_factory)(&alg, &public).unwrap();
    verifier
        .verify(signing_input.as_bytes(), &signature)
        .expect("the header's key verifies the signature");
    header
}

/// RFC 7638 computed another way: the required members through a sorted JSON object.
fn independent_thumbprint(jwk: &Value) -> String {
    let required: &[&str] = match jwk["kty"].as_str() {
        Some("EC") => &["crv", "kty", "x", "y"],
        _ => &["crv", "kty", "x"],
    };
    let members: std::collections::BTreeMap<&str, &Value> =
        required.iter().map(|name| (*name, &jwk[*name])).collect();
    let canonical = serde_json::to_string(&members).unwrap();
    b64(digest(&SHA256, canonical.as_bytes()).as_ref())
}

fn check(key: &Key, algorithm: &str) {
    let header = verified_header(key);
    assert_eq!(header["typ"], "dpop+jwt");
    assert_eq!(header["alg"], algorithm);
    assert_eq!(&header["jwk"], key.public_jwk());
    assert!(
        header["jwk"].get("d").is_none(),
        "no private part in the header"
    );
    assert_eq!(key.algorithm(), algorithm);
    assert_eq!(key.thumbprint(), independent_thumbprint(key.public_jwk()));
}

// RFC 9449 §4.1's example key and the `jkt` §6.1 gives for it.
#[test]
fn the_thumbprint_of_the_rfc_example() {
    let input = ec_thumbprint_input(
        "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
        "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
    );
    assert_eq!(
        thumbprint(&input),
        "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    );
}

#[test]
fn a_p256_key_from_every_source_is_the_same_key() {
    let made = Key::generate_es256().unwrap();
    check(&made, "ES256");
    let Pair::Es256(pair) = &made.pair else {
        panic!("P-256")
    };
    let pkcs8 = pair.to_pkcs8v1().unwrap();
    let sec1 = pair.private_key().as_der().unwrap();
    let sec1_pem = format!(
        "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
        pem_of("EC PRIVATE KEY", sec1.as_ref())
    );
    let jwk = made.private_jwk().unwrap();
    let parsed: Value = serde_json::from_str(&jwk).unwrap();
    assert_eq!(parsed["d"].as_str().unwrap().len(), 43, "32 bytes");
    let with_alg = {
        let mut value = parsed.clone();
        value["alg"] = json!("ES256");
        value["kid"] = json!("ignored");
        value.to_string()
    };
    for key in [
        Key::from_pem(pem_of("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).unwrap(),
        Key::from_pem(sec1_pem.as_bytes()).unwrap(),
        Key::from_der(sec1.as_ref()).unwrap(),
        Key::from_jwk(&jwk).unwrap(),
        Key::from_jwk(&with_alg).unwrap(),
    ] {
        check(&key, "ES256");
        assert_eq!(key.thumbprint(), made.thumbprint());
    }
}

#[test]
fn an_ed25519_key_from_every_source_is_the_same_key() {
    let made = Key::generate_ed25519().unwrap();
    check(&made, "EdDSA");
    assert_eq!(made.public_jwk()["kty"], "OKP");
    let Pair::Ed25519(pair) = &made.pair else {
        panic!("Ed25519")
    };
    let v1 = pair.to_pkcs8v1().unwrap();
    let v2 = pair.to_pkcs8().unwrap();
    let jwk = made.private_jwk().unwrap();
    for key in [
        Key::from_pem(pem_of("PRIVATE KEY", v1.as_ref()).as_bytes()).unwrap(),
        Key::from_der(v2.as_ref()).unwrap(),
        Key::from_jwk(&jwk).unwrap(),
    ] {
        check(&key, "EdDSA");
        assert_eq!(key.thumbprint(), made.thumbprint());
    }
}

#[test]
fn unusable_keys_are_key_errors() {
    let p384 = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING)
        .unwrap()
        .to_pkcs8v1()
        .unwrap();
    let rsa = RsaPair::generate(KeySize::Rsa2048)
        .unwrap()
        .as_der()
        .unwrap();
    let p256 = Key::generate_es256().unwrap();
    let mut public_only: Value = p256.public_jwk().clone();
    let other = Key::generate_es256().unwrap();
    let mismatched = {
        let mut value: Value = serde_json::from_str(&other.private_jwk().unwrap()).unwrap();
        value["x"] = p256.public_jwk()["x"].clone();
        value.to_string()
    };
    let wrong_alg = {
        let mut value: Value = serde_json::from_str(&p256.private_jwk().unwrap()).unwrap();
        value["alg"] = json!("RS256");
        value.to_string()
    };
    let wrong_curve = {
        let mut value: Value = serde_json::from_str(&p256.private_jwk().unwrap()).unwrap();
        value["crv"] = json!("P-384");
        value.to_string()
    };
    public_only["kid"] = json!("k");
    let pems = [
        pem_of("PRIVATE KEY", p384.as_ref()),
        pem_of("PRIVATE KEY", rsa.as_ref()),
        pem_of("PUBLIC KEY", &[1, 2, 3]),
        pem_of("ENCRYPTED PRIVATE KEY", &[1, 2, 3]),
        pem_of("PRIVATE KEY", b"not DER"),
        "no PEM at all".to_owned(),
    ];
    for pem in &pems {
        let error = Key::from_pem(pem.as_bytes()).err().expect(pem);
        assert_eq!(error.kind(), DpopErrorKind::Key, "{pem}: {error}");
    }
    let jwks = [
        public_only.to_string(),
        mismatched,
        wrong_alg,
        wrong_curve,
        r#"{"kty":"RSA","n":"AQ","e":"AQAB","d":"AQ"}"#.to_owned(),
        r#"{"kty":"EC","crv":"P-256","d":"AQ"}"#.to_owned(),
        r#"{"kty":"EC","crv":"P-256","x":"*","y":"*","d":"*"}"#.to_owned(),
        r#"{"kty":"OKP","crv":"Ed25519","x":"AQ","d":"AQ"}"#.to_owned(),
        "[]".to_owned(),
        "not json".to_owned(),
    ];
    for jwk in &jwks {
        let error = Key::from_jwk(jwk).err().expect(jwk);
        assert_eq!(error.kind(), DpopErrorKind::Key, "{jwk}: {error}");
        assert!(!error.to_string().contains("\"d\""), "{error}");
    }
}
