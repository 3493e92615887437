//! The tower plumbing: the layer, the service, and its response future.

mod future;
mod layer;
mod origin;
mod service;

pub use self::future::ResponseFuture;
pub use self::layer::AuthLayer;
pub use self::origin::{InvalidOrigin, Origin};
pub use self::service::AuthService;
