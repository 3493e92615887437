//! Instructions per request on the hot path, counted by valgrind's callgrind: a measure the
//! machine's load does not move, beside the timed ratios of `hot_path`.
//!
//! For each variant this bench runs itself again as a child under
//! `valgrind --tool=callgrind`, once sending no request and once sending `REQUESTS` (each
//! built inside the loop, as users build them, through a trivial inner service); the
//! difference divided by `REQUESTS` is the count per request. Needs `valgrind` on the `PATH`
//! (it says so and does nothing otherwise); about a minute.
//!
//! ```sh
//! cargo bench --bench instructions
//! cargo bench --all-features --bench instructions   # the same with every feature compiled in
//! ```

use std::process::Command;

use http::Request;
use tower::{Layer, Service};
use tower_auth_refresh::replay::{BufferBody, NoReplay};
use tower_http::auth::AddAuthorizationLayer;

use args::{Args, Length};
use hot::{Body, api, buffered_api, layer, reading_api, request, send};

/// Requests counted per run.
const REQUESTS: u64 = 20_000;

const VARIANTS: [&str; 6] = [
    "no_middleware",
    "add_authorization",
    "auth_service_no_replay",
    "auth_service",
    "auth_service_buffer",
    // `AddAuthorization` over an API that reads the body, as `BufferBody`'s must.
    "add_authorization_reading",
];

/// In the child: sends `count` requests through `variant`.
fn child(variant: &str, count: u64, with_headers: bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let layer = layer(&runtime);
    fn run<S>(mut service: S, count: u64, with_headers: bool)
    where
        S: Service<Request<Body>, Response = http::Response<Body>>,
        S::Error: std::fmt::Debug,
    {
        for _ in 0..count {
            send(&mut service, request(with_headers));
        }
    }
    match variant {
        "no_middleware" => run(api(), count, with_headers),
        "add_authorization" => run(
            AddAuthorizationLayer::bearer("token").layer(api()),
            count,
            with_headers,
        ),
        "auth_service_no_replay" => run(
            layer.replay_policy(NoReplay).layer(api()),
            count,
            with_headers,
        ),
        "auth_service" => run(layer.layer(api()), count, with_headers),
        "auth_service_buffer" => run(
            layer
                .replay_policy(BufferBody::default())
                .layer(buffered_api()),
            count,
            with_headers,
        ),
        "add_authorization_reading" => run(
            AddAuthorizationLayer::bearer("token").layer(reading_api()),
            count,
            with_headers,
        ),
        other => panic!("no variant {other}"),
    }
}

/// The instructions a child run executed, as callgrind reports them.
fn instructions(variant: &str, count: u64, with_headers: bool) -> u64 {
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(std::env::current_exe().unwrap())
        .args(["--child", variant, &count.to_string()])
        .arg(if with_headers { "headers" } else { "none" })
        .output()
        .expect("run valgrind");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{variant}: {stderr}");
    // "==123== Collected : 4567890"
    stderr
        .lines()
        .find_map(|line| line.split("Collected :").nth(1))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("{variant}: no count in {stderr}"))
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(at) = argv.iter().position(|arg| arg == "--child") {
        let count = argv[at + 2].parse().unwrap();
        child(&argv[at + 1], count, argv[at + 3] == "headers");
        return;
    }
    let args = Args::parse();
    if args.length == Length::Test || !args.wants("instructions") {
        return;
    }
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("instructions: skipped: valgrind not found");
        return;
    }
    println!(
        "\ninstructions per request (callgrind; {REQUESTS} requests built in the loop, minus a run of none)"
    );
    println!(
        "{:<24} {:>11} {:>8} {:>12} {:>8}",
        "service", "no headers", "vs add", "two headers", "vs add"
    );
    let per_request = |variant: &str, with_headers: bool| {
        let none = instructions(variant, 0, with_headers);
        let all = instructions(variant, REQUESTS, with_headers);
        all.saturating_sub(none) / REQUESTS
    };
    let counts: Vec<[u64; 2]> = VARIANTS
        .iter()
        .map(|variant| [per_request(variant, false), per_request(variant, true)])
        .collect();
    let baseline = counts[VARIANTS
        .iter()
        .position(|v| *v == "add_authorization")
        .unwrap()];
    for (variant, counts) in VARIANTS.iter().zip(&counts) {
        let beyond = |i: usize| counts[i] as i64 - baseline[i] as i64;
        println!(
            "{variant:<24} {:>11} {:>+8} {:>12} {:>+8}",
            counts[0],
            beyond(0),
            counts[1],
            beyond(1)
        );
    }
}

#[path = "support/args.rs"]
mod args;
#[path = "support/hot.rs"]
mod hot;
