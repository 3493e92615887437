//! The README's "Many users behind one layer" example (`tests/keyed_gateway/readme.rs`,
//! character for character) run as an axum gateway on 127.0.0.1 in front of the loopback
//! identity provider and API, each user with their own password grant.
#![cfg(feature = "keyed")]

#[path = "keyed_gateway/readme.rs"]
mod readme;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower_auth_refresh::test_util::{Api, IdentityProvider, ProviderConfig};

use readme::{Account, UserId, gateway};

const LINKED: [&str; 3] = ["alice", "bob", "carol"];

/// `burst` concurrent `GET /users/{user}/me` for each user; the answers, per user.
async fn burst(
    gateway: &str,
    users: &[&str],
    burst: usize,
) -> BTreeMap<String, Vec<(u16, String)>> {
    let callers = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut requests = tokio::task::JoinSet::new();
    for user in users.iter().flat_map(|user| (0..burst).map(move |_| *user)) {
        let callers = callers.clone();
        let (user, url) = (user.to_owned(), format!("{gateway}/users/{user}/me"));
        requests.spawn(async move {
            let request = http::Request::get(url).body(Full::default()).unwrap();
            let response = callers.request(request).await.unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (user, (status, String::from_utf8_lossy(&body).into_owned()))
        });
    }
    let mut answers: BTreeMap<String, Vec<(u16, String)>> = BTreeMap::new();
    for (user, answer) in requests.join_all().await {
        answers.entry(user).or_default().push(answer);
    }
    answers
}

fn each(n: u64, users: &[&str]) -> BTreeMap<String, u64> {
    users.iter().map(|user| ((*user).to_owned(), n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_gateway_calls_the_api_as_each_user() {
    let mut config = ProviderConfig::default().reuse_detection(true);
    for user in LINKED.iter().chain(&["mallory"]) {
        config = config.with_user(*user, format!("password of {user}"));
    }
    let idp = IdentityProvider::start(config).await.unwrap();
    let api = Api::start(&idp).await.unwrap();
    // Mallory exists at the provider but linked no account in the application.
    let accounts: HashMap<UserId, Account> = LINKED
        .iter()
        .map(|user| {
            let account = Account {
                client_id: idp.config().client_id().to_owned(),
                client_secret: idp.config().client_secret().to_owned(),
                username: (*user).to_owned(),
                password: format!("password of {user}"),
            };
            (UserId((*user).to_owned()), account)
        })
        .collect();
    let http = Client::builder(TokioExecutor::new()).build_http();
    let (router, handle) = gateway(&idp.token_url(), &api.origin(), Arc::new(accounts), http);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, router).into_future());

    // A burst per user: each answer names its own user; one login per user.
    let answers = burst(&address, &LINKED, 20).await;
    for user in LINKED {
        assert_eq!(answers[user], vec![(200, user.to_owned()); 20], "{user}");
    }
    let stats = idp.stats();
    assert_eq!(stats.logins_by_user, each(1, &LINKED));
    assert_eq!(stats.refresh_grants, 0);

    // The provider revokes every access token: one refresh per user, nobody else's token.
    idp.revoke_access_tokens();
    let answers = burst(&address, &LINKED, 20).await;
    for user in LINKED {
        assert_eq!(answers[user], vec![(200, user.to_owned()); 20], "{user}");
    }
    let stats = idp.stats();
    assert_eq!(stats.logins_by_user, each(1, &LINKED));
    assert_eq!(stats.refreshes_by_user, each(1, &LINKED));
    assert_eq!(stats.reuse_detected, 0);
    let api_stats = api.stats();
    assert_eq!(api_stats.wrong_user, 0);
    assert_eq!(api_stats.missing_token, 0);
    assert_eq!(api_stats.ok, 120);

    // A user without an account: a 502 from the gateway, nothing at the API or the provider,
    // and the terminal refusal is kept (a second burst does not ask again).
    for _ in 0..2 {
        let answers = burst(&address, &["mallory"], 5).await;
        assert!(
            answers["mallory"].iter().all(|(status, _)| *status == 502),
            "{answers:?}"
        );
    }
    assert_eq!(
        idp.stats().requests,
        stats.requests,
        "mallory's session never reached the provider"
    );
    assert_eq!(api.stats().requests, api_stats.requests);

    // The handle speaks per user: clearing bob's session costs bob one login, nobody else.
    handle.clear(&UserId("bob".into())).await.unwrap();
    let answers = burst(&address, &LINKED, 5).await;
    for user in LINKED {
        assert_eq!(answers[user], vec![(200, user.to_owned()); 5], "{user}");
    }
    let logins = idp.stats().logins_by_user;
    assert_eq!(logins["bob"], 2);
    assert_eq!((logins["alice"], logins["carol"]), (1, 1));
    assert_eq!(
        handle.live_sessions(),
        4,
        "alice, bob, carol and mallory's failed one"
    );
}

// The README shows `tests/keyed_gateway/readme.rs`, character for character.
#[test]
fn the_readme_shows_the_code_under_test() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme
        .find("## Many users behind one layer")
        .expect("the section")..];
    let start = section.find("```rust,ignore\n").expect("a code block") + "```rust,ignore\n".len();
    let block = &section[start..start + section[start..].find("```\n").unwrap()];
    assert_eq!(block, include_str!("keyed_gateway/readme.rs"));
}
