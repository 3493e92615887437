//! The tower plumbing: the layer and its builder, the service, its response future, and the
//! two things they ask of every request (which origins get the token, which responses are
//! rejections).

mod builder;
mod future;
mod layer;
mod origin;
pub(crate) mod proof;
mod rejection;
mod service;

pub use self::builder::AuthLayerBuilder;
#[cfg(feature = "keyed")]
pub(crate) use self::future::Replay;
pub use self::future::ResponseFuture;
pub use self::layer::AuthLayer;
#[cfg(feature = "keyed")]
pub(crate) use self::origin::Origins;
pub use self::origin::{InvalidOrigin, Origin};
pub use self::rejection::Rejection;
pub use self::service::AuthService;
#[cfg(feature = "keyed")]
pub(crate) use self::service::{Rules, Session, Shared, attach, ours, send};
