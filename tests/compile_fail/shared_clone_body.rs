// octocrab's `OctoBody` is `Clone`, but its clones share one stream: a retry would send an
// empty body. Naming the stack as a boxed service checks the bound where the compiler shows
// `ReplayableBody`'s message.
use std::convert::Infallible;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use octocrab::OctoBody;
use tower::util::BoxCloneSyncService;
use tower::{Layer, service_fn};
use tower_auth_refresh::{AuthLayer, BoxError, RefreshRequest, TokenSet};

fn main() {
    let refresher =
        service_fn(|_: RefreshRequest| async { Ok::<_, Infallible>(TokenSet::new("token")) });
    let client = Client::builder(TokioExecutor::new()).build_http::<OctoBody>();
    let stack = AuthLayer::new(refresher).layer(client);
    let _: BoxCloneSyncService<Request<OctoBody>, Response<Incoming>, BoxError> =
        BoxCloneSyncService::new(stack);
}
