use std::error::Error as StdError;
use std::fmt;

use crate::jose::KeyError;
use crate::refresh::BoxError;

/// What kind of DPoP failure a [`DpopError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DpopErrorKind {
    /// The key could not be read or made: not PEM or JWK, encrypted, another curve than
    /// P-256 or Ed25519, or a private part that does not match its public part.
    Key,
    /// The request's URI cannot be a proof's `htu`: it has no scheme or no host (a relative
    /// URI), or a scheme other than `http` and `https`.
    Uri,
    /// Signing failed, or the system gave no randomness for the proof's `jti`.
    Sign,
}

/// A DPoP failure: reading a key, or making a proof. Its `Display` and `Debug` show no key
/// material, no token and no proof.
///
/// See the [module example](super#example).
pub struct DpopError {
    kind: DpopErrorKind,
    message: &'static str,
    source: Option<BoxError>,
}

impl DpopError {
    pub(crate) fn new(kind: DpopErrorKind, message: &'static str) -> Self {
        Self {
            kind,
            message,
            source: None,
        }
    }

    pub(super) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> DpopErrorKind {
        self.kind
    }
}

impl From<KeyError> for DpopError {
    fn from(error: KeyError) -> Self {
        Self {
            kind: DpopErrorKind::Key,
            message: error.message,
            source: error.source,
        }
    }
}

impl fmt::Debug for DpopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The sources are aws-lc-rs, pem and base64 errors: none of them holds key material.
        f.debug_struct("DpopError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for DpopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DPoP: {}", self.message)
    }
}

impl StdError for DpopError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}
