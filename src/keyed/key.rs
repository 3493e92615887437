//! Where a request's session key comes from, and the error when it has none.

use std::fmt;
use std::sync::Arc;

use http::{Extensions, HeaderMap, Method, Request, Uri};

/// The head of a request, as a [`KeyedAuthLayer::key_from`](super::KeyedAuthLayer::key_from)
/// closure sees it: method, URI, headers and extensions, whatever the body type.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    pub(crate) fn of<B>(request: &'a Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }

    /// The request's method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The request's URI.
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The request's headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The request's extensions.
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }
}

/// A closure that names a request's session.
type Closure<K> = dyn Fn(&RequestHead<'_>) -> Option<K> + Send + Sync;

/// How a layer value finds a request's key.
pub(crate) enum KeyFrom<K> {
    /// A request extension of type `K`.
    Extension,
    /// The application's closure.
    With(Arc<Closure<K>>),
}

impl<K> Clone for KeyFrom<K> {
    fn clone(&self) -> Self {
        match self {
            Self::Extension => Self::Extension,
            Self::With(closure) => Self::With(Arc::clone(closure)),
        }
    }
}

impl<K> fmt::Debug for KeyFrom<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Extension => "an extension",
            Self::With(_) => "a closure",
        })
    }
}

/// A request for a keyed layer's session had no session key: it was not sent.
///
/// Returned (boxed, as the service's error) by a [`KeyedAuthService`](super::KeyedAuthService)
/// for a request it would have sent with a token, when the request carries no key (no
/// extension of the key's type, or the layer's [`key_from`](super::KeyedAuthLayer::key_from)
/// closure returned `None`) and the layer has no
/// [`default_key`](super::KeyedAuthLayer::default_key). Requests that the layer sends without a
/// token anyway (another origin, their own `Authorization`) need no key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingSessionKey {
    key_type: &'static str,
}

impl MissingSessionKey {
    pub(crate) fn of<K>() -> Self {
        Self {
            key_type: std::any::type_name::<K>(),
        }
    }

    /// The name of the key's type, as [`std::any::type_name`] gives it.
    pub fn key_type(&self) -> &'static str {
        self.key_type
    }
}

impl fmt::Display for MissingSessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request names no session (no `{}` key): it was not sent",
            self.key_type
        )
    }
}

impl std::error::Error for MissingSessionKey {}
