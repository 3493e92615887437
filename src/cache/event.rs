//! What the session's hooks are told.

use crate::refresh::RefreshReason;
use crate::token::TokenSet;

/// A change of the session's tokens, told to the hooks of
/// [`AuthLayerBuilder::on_event`](crate::AuthLayerBuilder::on_event).
///
/// Hooks hear of changes one at a time, in the order they happened, never of a token set older
/// than one they were told of.
#[derive(Debug)]
#[non_exhaustive]
pub enum TokenEvent<'a> {
    /// The refresher gave a new token set: a login when `reason` is
    /// [`RefreshReason::NoToken`] (a refresher may also log in for another reason, when its
    /// refresh token was refused).
    Refreshed {
        /// The new token set.
        tokens: &'a TokenSet,
        /// Why the refresh ran.
        reason: RefreshReason,
    },
    /// A token set found in the store (saved by another process, or an earlier run) is now the
    /// session's.
    Adopted {
        /// The token set.
        tokens: &'a TokenSet,
    },
    /// The application set the tokens
    /// ([`AuthHandle::set_tokens`](crate::AuthHandle::set_tokens)).
    Set {
        /// The token set.
        tokens: &'a TokenSet,
    },
    /// An answer that could not be used otherwise carried a new refresh token, now the
    /// session's (the access token is unchanged).
    RefreshTokenKept {
        /// The session's token set, with the new refresh token.
        tokens: &'a TokenSet,
    },
    /// The application cleared the session ([`AuthHandle::clear`](crate::AuthHandle::clear) or
    /// [`logout`](crate::AuthHandle::logout)).
    Cleared,
}

impl TokenEvent<'_> {
    /// The session's new token set, if it has one.
    pub fn tokens(&self) -> Option<&TokenSet> {
        match self {
            Self::Refreshed { tokens, .. }
            | Self::Adopted { tokens }
            | Self::Set { tokens }
            | Self::RefreshTokenKept { tokens } => Some(tokens),
            Self::Cleared => None,
        }
    }
}
