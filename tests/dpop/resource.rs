//! The loopback API as a DPoP resource server: it takes a proof of this request by the
//! token's key, and refuses the rest, with challenges `Dpop::challenge` tells from a refused
//! token. The proofs here are made by hand, as the layer will make them.

use http::{HeaderValue, Method, StatusCode};
use tower_auth_refresh::TokenSet;
use tower_auth_refresh::dpop::{Dpop, DpopChallenge};
use tower_auth_refresh::test_util::{Api, IdentityProvider, ProviderConfig};

use crate::support::{Reply, refresher, send};

struct Servers {
    idp: IdentityProvider,
    api: Api,
    dpop: Dpop,
    tokens: TokenSet,
}

async fn logged_in() -> Servers {
    let idp = IdentityProvider::start(ProviderConfig::default().require_dpop(true))
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    let dpop = Dpop::generate().unwrap();
    let refresher = refresher(&idp, &dpop);
    let tokens = refresher.login().await.unwrap();
    Servers {
        idp,
        api,
        dpop,
        tokens,
    }
}

impl Servers {
    fn token(&self) -> &str {
        self.tokens.access_token().secret()
    }

    fn dpop_authorization(&self) -> HeaderValue {
        HeaderValue::from_str(&format!("DPoP {}", self.token())).unwrap()
    }

    /// `method url` with `Authorization: DPoP` and `proof`.
    async fn call(&self, method: Method, url: &str, proof: HeaderValue) -> Reply {
        let headers = [
            ("authorization", self.dpop_authorization()),
            ("dpop", proof),
        ];
        send(method, url, &headers, None).await
    }

    fn proof(&self, method: &Method, url: &str, token: Option<&str>) -> HeaderValue {
        self.dpop
            .proof(method, &url.parse().unwrap(), token)
            .unwrap()
    }
}

fn description(reply: &Reply) -> String {
    reply.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_proof_of_this_request_by_the_tokens_key_is_taken() {
    let s = logged_in().await;
    let me = s.api.url("/user/me?include=roles");
    let ok = s
        .call(
            Method::GET,
            &me,
            s.proof(&Method::GET, &me, Some(s.token())),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    assert_eq!(ok.body["data"]["attributes"]["username"], "reader");
    let echo = s.api.url("/echo");
    let posted = s
        .call(
            Method::POST,
            &echo,
            s.proof(&Method::POST, &echo, Some(s.token())),
        )
        .await;
    assert_eq!(posted.status, StatusCode::OK);
    assert_eq!(s.api.stats().dpop_ok, 2);
    assert_eq!(s.idp.stats().dpop_proofs, 1, "the API keeps its own books");
}

#[tokio::test]
async fn a_proof_for_another_method_url_token_or_key_is_refused() {
    let s = logged_in().await;
    let me = s.api.url("/user/me");
    let other_key = Dpop::generate().unwrap();
    let cases = [
        (
            s.proof(&Method::POST, &me, Some(s.token())),
            "DPoP proof htm mismatch",
        ),
        (
            s.proof(&Method::GET, &s.api.url("/auth/check"), Some(s.token())),
            "DPoP proof htu mismatch",
        ),
        (
            s.proof(&Method::GET, &me, Some("another-token")),
            "DPoP proof ath mismatch",
        ),
        (s.proof(&Method::GET, &me, None), "DPoP proof ath mismatch"),
        (
            other_key
                .proof(&Method::GET, &me.parse().unwrap(), Some(s.token()))
                .unwrap(),
            "DPoP proof key is not the key the token is bound to",
        ),
    ];
    for (proof, why) in cases {
        let refused = s.call(Method::GET, &me, proof).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{why}");
        assert!(
            description(&refused).contains(why),
            "{}",
            description(&refused)
        );
        assert_eq!(
            Dpop::challenge(refused.status, &refused.headers),
            Some(DpopChallenge::InvalidProof),
            "not a token rejection: {why}"
        );
    }
    // A proof taken once is not taken again.
    let proof = s.proof(&Method::GET, &me, Some(s.token()));
    assert_eq!(
        s.call(Method::GET, &me, proof.clone()).await.status,
        StatusCode::OK
    );
    let replayed = s.call(Method::GET, &me, proof).await;
    assert!(
        description(&replayed).contains("Replay"),
        "{}",
        description(&replayed)
    );
    // No proof at all.
    let bare = send(
        Method::GET,
        &me,
        &[("authorization", s.dpop_authorization())],
        None,
    )
    .await;
    assert_eq!(
        Dpop::challenge(bare.status, &bare.headers),
        Some(DpopChallenge::InvalidProof)
    );
    let stats = s.api.stats();
    assert_eq!(
        (stats.dpop_invalid_proofs, stats.dpop_ok),
        (7, 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn a_bound_token_is_no_bearer_token_and_a_bearer_token_no_dpop_one() {
    let s = logged_in().await;
    let me = s.api.url("/user/me");
    s.api.set_www_authenticate(true);
    let bearer = HeaderValue::from_str(&format!("Bearer {}", s.token())).unwrap();
    let as_bearer = send(Method::GET, &me, &[("authorization", bearer)], None).await;
    assert_eq!(as_bearer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(description(&as_bearer), r#"Bearer error="invalid_token""#);
    assert_eq!(
        Dpop::challenge(as_bearer.status, &as_bearer.headers),
        None,
        "a token rejection"
    );
    assert_eq!(s.api.stats().dpop_bound_as_bearer, 1);

    // An unbound token under the DPoP scheme is a bad token, not a bad proof.
    let plain = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let plain_api = Api::start(&plain).await.unwrap();
    let tokens = plain
        .refresher_builder()
        .build_http()
        .unwrap()
        .login()
        .await
        .unwrap();
    let url = plain_api.url("/user/me");
    let token = tokens.access_token().secret();
    let headers = [
        (
            "authorization",
            HeaderValue::from_str(&format!("DPoP {token}")).unwrap(),
        ),
        ("dpop", s.proof(&Method::GET, &url, Some(token))),
    ];
    let refused = send(Method::GET, &url, &headers, None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(description(&refused).contains(r#"error="invalid_token""#));
    assert_eq!(Dpop::challenge(refused.status, &refused.headers), None);
}

// The API's own nonces: a challenge, the retry with a new proof carrying the nonce, a new
// nonce learnt from a success; the identity provider's nonce never goes to the API.
#[tokio::test]
async fn the_apis_nonce_challenge_is_met_with_a_new_proof() {
    let s = logged_in().await;
    s.api.set_dpop_nonce(true);
    let me = s.api.url("/user/me");
    let api_uri = me.parse().unwrap();
    let first = s
        .call(
            Method::GET,
            &me,
            s.proof(&Method::GET, &me, Some(s.token())),
        )
        .await;
    assert_eq!(first.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        Dpop::challenge(first.status, &first.headers),
        Some(DpopChallenge::UseNonce)
    );
    assert!(Dpop::is_challenge(first.status, &first.headers));
    s.dpop.observe(&api_uri, &first.headers);
    let nonce = s.dpop.nonce(&api_uri).expect("the challenge's nonce");
    assert_eq!(first.headers["dpop-nonce"], nonce.as_str());
    let retry = s
        .call(
            Method::GET,
            &me,
            s.proof(&Method::GET, &me, Some(s.token())),
        )
        .await;
    assert_eq!(retry.status, StatusCode::OK, "{}", description(&retry));
    assert_eq!(
        retry.headers["dpop-nonce"],
        nonce.as_str(),
        "every answer carries it"
    );

    // A new nonce, learnt from a success: the old one is taken once more, then the new one.
    s.api.rotate_dpop_nonce();
    let taken = s
        .call(
            Method::GET,
            &me,
            s.proof(&Method::GET, &me, Some(s.token())),
        )
        .await;
    assert_eq!(taken.status, StatusCode::OK);
    s.dpop.observe(&api_uri, &taken.headers);
    assert_ne!(s.dpop.nonce(&api_uri).unwrap(), nonce);
    s.api.rotate_dpop_nonce();
    let next = s
        .call(
            Method::GET,
            &me,
            s.proof(&Method::GET, &me, Some(s.token())),
        )
        .await;
    assert_eq!(next.status, StatusCode::OK, "{}", description(&next));

    let token_url = s.idp.token_url().parse().unwrap();
    assert_eq!(s.dpop.nonce(&token_url), None, "the provider gave none");
    let stats = s.api.stats();
    assert_eq!(
        (stats.dpop_nonce_challenges, stats.dpop_ok),
        (1, 3),
        "{stats:?}"
    );
}
