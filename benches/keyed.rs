//! The keyed layer: its hot path against the single-session layer's, and what a session
//! costs in memory.
//!
//! - `keyed/ratios` (table): every service gets the same requests, built inside the timed
//!   loop, each carrying a user id as an extension (the single-session services ignore it):
//!   tower-http's `AddAuthorization`, `AuthService` (one session), `KeyedAuthService` with one
//!   live session, and with 100,000 live sessions: each request for a user drawn at random
//!   among 1,000 of them (the users active at a time: each comes about once a round, so its
//!   session is mostly out of the processor's caches), among 100 (each comes about ten times a
//!   round: mostly from the caches), or among all 100,000 (a working set far beyond the
//!   processor's caches: every request's session is a memory miss). Beside them, the same
//!   three spreads through a `HashMap` of 100,000 single-session layers, one per user (what a
//!   user would build by hand): the same sessions out of the caches, without the keyed layer.
//!   Per round each service sends 1,000 requests, in rotating order; the table gives the
//!   medians (and quartiles) of the per-round ratios to `AuthService`, then those of the keyed
//!   layer to the map with the same users.
//! - `keyed/memory` (table): the bytes held per session, counted by the global allocator
//!   (allocations minus frees) over 10,000 sessions made in one layer: with no token, and with
//!   a token set (a 43-byte access token, a 43-byte refresh token), beside what that token set
//!   alone holds.
//!
//! ```sh
//! cargo bench --bench keyed --features keyed             # full run
//! cargo bench --bench keyed --features keyed -- --quick  # short run
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response};
use tower::{Layer, Service, service_fn};
use tower_auth_refresh::keyed::KeyedAuthLayer;
use tower_auth_refresh::replay::NoReplay;
use tower_auth_refresh::{AuthLayer, RefreshRequest, TokenSet};
use tower_http::auth::AddAuthorizationLayer;

/// Counts the bytes held, while `COUNTING` is on (one relaxed load otherwise).
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static HELD: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            HELD.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The session key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct User(u32);

impl std::fmt::Display for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Live sessions of the large keyed layer.
const SESSIONS: u32 = 100_000;
/// Requests per service per round.
const CHUNK: usize = 1_000;

fn request(user: u32) -> Request<Body> {
    let mut request = Request::get("http://127.0.0.1/user/me")
        .body(Body::from("{}"))
        .unwrap();
    request.extensions_mut().insert(User(user));
    request
}

fn refresher() -> impl Service<
    RefreshRequest,
    Response = TokenSet,
    Error = Infallible,
    Future = impl Future<Output = Result<TokenSet, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(|_: RefreshRequest| async { Ok::<_, Infallible>(TokenSet::new("token")) })
}

fn tokens(user: u32) -> TokenSet {
    // 43 characters each, as a 32-byte random value in base64url.
    TokenSet::new(format!("{user:0>43}"))
        .with_refresh_token(format!("{user:r>43}"))
        .with_expires_in(Duration::from_secs(3600))
}

/// A keyed layer with `sessions` live sessions, each holding a valid token.
fn keyed(runtime: &tokio::runtime::Runtime, sessions: u32) -> KeyedAuthLayer<User> {
    let layer = KeyedAuthLayer::builder(|_: &User| refresher()).build();
    let handle = layer.handle();
    runtime.block_on(async {
        for user in 0..sessions {
            handle.set_tokens(&User(user), tokens(user)).await.unwrap();
        }
    });
    assert_eq!(handle.live_sessions(), u64::from(sessions));
    layer
}

/// A small, fast, fixed sequence of users spread over the sessions (xorshift).
fn users(n: usize) -> Vec<u32> {
    let mut state = 0x2545_f491_u32;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state % SESSIONS
        })
        .collect()
}

fn ratios(runtime: &tokio::runtime::Runtime, rounds: usize) {
    let single = AuthLayer::new(refresher()).replay_policy(NoReplay);
    runtime
        .block_on(single.handle().set_tokens(tokens(0)))
        .unwrap();
    let one = keyed(runtime, 1);
    let many = keyed(runtime, SESSIONS);
    let spread = users(CHUNK * 16);
    // The users active at a time: 1,000 (or 100) of the 100,000, each request for one of
    // them. With 1,000 requests a round, each of 1,000 users comes about once a round, after
    // the other services ran: its session is out of the processor's caches nearly every time;
    // each of 100 comes about ten times, mostly from the caches.
    let active = |count: u32| -> Vec<u32> {
        users(CHUNK * 16)
            .iter()
            .map(|user| user % count * (SESSIONS / count - 3))
            .collect()
    };
    let (hot, hotter) = (active(1000), active(100));
    type Run<'a> = Box<dyn FnMut(usize) -> Duration + 'a>;
    fn timed<S>(mut service: S, users: impl Fn(usize) -> u32 + 'static) -> Run<'static>
    where
        S: Service<Request<Body>, Response = Response<Body>> + 'static,
        S::Error: std::fmt::Debug,
    {
        Box::new(move |round| {
            let started = Instant::now();
            for n in 0..CHUNK {
                send(&mut service, request(users(round * CHUNK + n)));
            }
            started.elapsed()
        })
    }
    /// The same requests through a map of single-session services, one per user: the map a
    /// user would build by hand, with the same sessions out of the processor's caches. One
    /// map, shared by the rows that use it.
    type Map<S> = Rc<RefCell<HashMap<u32, S>>>;
    fn timed_map<S>(services: Map<S>, users: impl Fn(usize) -> u32 + 'static) -> Run<'static>
    where
        S: Service<Request<Body>, Response = Response<Body>> + 'static,
        S::Error: std::fmt::Debug,
    {
        Box::new(move |round| {
            let mut services = services.borrow_mut();
            let started = Instant::now();
            for n in 0..CHUNK {
                let user = users(round * CHUNK + n);
                let service = services.get_mut(&user).expect("a service per user");
                send(service, request(user));
            }
            started.elapsed()
        })
    }
    let map: Map<_> = Rc::new(RefCell::new(
        (0..SESSIONS)
            .map(|user| {
                let layer = AuthLayer::new(refresher()).replay_policy(NoReplay);
                runtime
                    .block_on(layer.handle().set_tokens(tokens(user)))
                    .unwrap();
                (user, layer.layer(api()))
            })
            .collect(),
    ));
    let (map_hot, map_hotter, map_spread) = (hot.clone(), hotter.clone(), spread.clone());
    let spread_users = move |n: usize| spread[n % spread.len()];
    let mut services: Vec<(&str, Run<'_>)> = vec![
        (
            "add_authorization",
            timed(AddAuthorizationLayer::bearer("token").layer(api()), |_| 0),
        ),
        ("auth_service", timed(single.layer(api()), |_| 0)),
        (
            "keyed, 1 session",
            timed(one.clone().replay_policy(NoReplay).layer(api()), |_| 0),
        ),
        (
            "keyed, 100,000 sessions, 1,000 in use",
            timed(
                many.clone().replay_policy(NoReplay).layer(api()),
                move |n| hot[n % hot.len()],
            ),
        ),
        (
            "keyed, 100,000 sessions, 100 in use",
            timed(
                many.clone().replay_policy(NoReplay).layer(api()),
                move |n| hotter[n % hotter.len()],
            ),
        ),
        (
            "keyed, 100,000 sessions, all in use",
            timed(
                many.clone().replay_policy(NoReplay).layer(api()),
                spread_users,
            ),
        ),
        (
            "map of 100,000 layers, 1,000 in use",
            timed_map(map.clone(), move |n| map_hot[n % map_hot.len()]),
        ),
        (
            "map of 100,000 layers, 100 in use",
            timed_map(map.clone(), move |n| map_hotter[n % map_hotter.len()]),
        ),
        (
            "map of 100,000 layers, all in use",
            timed_map(map, move |n| map_spread[n % map_spread.len()]),
        ),
    ];
    let mut times = vec![Vec::new(); services.len()];
    for round in 0..rounds {
        for turn in 0..services.len() {
            let index = (turn + round) % services.len();
            times[index].push((services[index].1)(round));
        }
    }
    println!(
        "\nkeyed/ratios: {rounds} rounds; per round each service sends {CHUNK} requests (NoReplay, built in the loop with a user id extension), in rotating order; ratios per round to auth_service"
    );
    println!(
        "{:<40} {:>8} {:>12} {:>12}",
        "service", "ns/req", "ratio (med)", "quartiles"
    );
    for (index, (name, _)) in services.iter().enumerate() {
        let mut ratios: Vec<f64> = times[index]
            .iter()
            .zip(&times[1])
            .map(|(time, base)| time.as_secs_f64() / base.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        let mut nanos: Vec<f64> = times[index]
            .iter()
            .map(|time| time.as_nanos() as f64 / CHUNK as f64)
            .collect();
        nanos.sort_by(f64::total_cmp);
        let at = |values: &[f64], q: usize| values[(values.len() - 1) * q / 4];
        println!(
            "{:<40} {:>8.1} {:>12.3} {:>12}",
            name,
            at(&nanos, 2),
            at(&ratios, 2),
            format!("{:.2}–{:.2}", at(&ratios, 1), at(&ratios, 3)),
        );
    }
    // The keyed layer against the map of layers with the same users: what the keyed lookup
    // costs beyond the memory any per-user session touches.
    println!(
        "{:<40} {:>21} {:>12}",
        "keyed against the map", "ratio (med)", "quartiles"
    );
    for (keyed, map, name) in [
        (3, 6, "1,000 in use"),
        (4, 7, "100 in use"),
        (5, 8, "all in use"),
    ] {
        let mut ratios: Vec<f64> = times[keyed]
            .iter()
            .zip(&times[map])
            .map(|(time, base)| time.as_secs_f64() / base.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        let at = |q: usize| ratios[(ratios.len() - 1) * q / 4];
        println!(
            "{:<40} {:>21.3} {:>12}",
            name,
            at(2),
            format!("{:.2}–{:.2}", at(1), at(3))
        );
    }
}

/// Bytes held after `make` minus before, divided by `count`.
fn held_per(count: u32, make: impl FnOnce()) -> f64 {
    let before = HELD.load(Ordering::Relaxed);
    make();
    (HELD.load(Ordering::Relaxed) - before) as f64 / f64::from(count)
}

fn memory(runtime: &tokio::runtime::Runtime) {
    const COUNT: u32 = 10_000;
    COUNTING.store(true, Ordering::Relaxed);
    let mut kept = Vec::new();
    let tokens_alone = held_per(COUNT, || {
        kept.extend((0..COUNT).map(tokens));
    });
    let empty = KeyedAuthLayer::builder(|_: &User| refresher()).build();
    let without = held_per(COUNT, || {
        let handle = empty.handle();
        runtime.block_on(async {
            for user in 0..COUNT {
                handle.clear(&User(user)).await.unwrap();
            }
        });
        assert_eq!(handle.live_sessions(), u64::from(COUNT));
    });
    let full = KeyedAuthLayer::builder(|_: &User| refresher()).build();
    let with = held_per(COUNT, || {
        let handle = full.handle();
        runtime.block_on(async {
            for user in 0..COUNT {
                handle.set_tokens(&User(user), tokens(user)).await.unwrap();
            }
        });
    });
    COUNTING.store(false, Ordering::Relaxed);
    println!("\nkeyed/memory: bytes held per session, over {COUNT} sessions in one layer");
    println!("{:<40} {:>10}", "what", "bytes");
    println!("{:<40} {:>10.0}", "session without tokens", without);
    println!("{:<40} {:>10.0}", "session with a token set", with);
    println!(
        "{:<40} {:>10.0}",
        "the token set alone (TokenSet values)", tokens_alone
    );
    println!(
        "{:<40} {:>10.0}",
        "with tokens, beyond the TokenSet values",
        with - tokens_alone
    );
    drop((kept, empty, full));
}

#[path = "support/args.rs"]
mod args;
use args::{Args, Length};
// The trivial API and the send of one request, as the hot-path benches have them.
#[path = "support/hot.rs"]
#[allow(dead_code)]
mod hot;
use hot::{Body, api, send};

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let rounds = match args.length {
        Length::Test => 2,
        Length::Quick => 100,
        Length::Full => 500,
    };
    if args.wants("keyed/memory") {
        memory(&runtime);
    }
    if args.wants("keyed/ratios") {
        ratios(&runtime, rounds);
    }
}
