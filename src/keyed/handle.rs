//! The application's view of a keyed layer's sessions, by key.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use super::sessions::Sessions;
use crate::cache::Windows;
use crate::handle::{AuthHandle, TokenState};
use crate::refresh::RefreshError;
use crate::token::{AccessToken, TokenSet};

/// A handle on a [`KeyedAuthLayer`](super::KeyedAuthLayer)'s sessions: what
/// [`AuthHandle`] does for one session, for the session of a key.
///
/// Every method that acts (`token`, `refresh`, `set_tokens`, `clear`, `logout`) makes the
/// key's session if it is not in memory (reading it from the store, if the layer has one), so
/// that the act reaches the store and every later request; `state` and `access_token` only
/// look. Get one with [`KeyedAuthLayer::handle`](super::KeyedAuthLayer::handle); clones share
/// the sessions.
pub struct KeyedHandle<K> {
    sessions: Arc<Sessions<K>>,
    windows: Windows,
}

impl<K> KeyedHandle<K> {
    pub(super) fn new(sessions: Arc<Sessions<K>>, windows: Windows) -> Self {
        Self { sessions, windows }
    }
}

impl<K> KeyedHandle<K>
where
    K: Clone + Hash + Eq + Send + Sync + 'static,
{
    fn session(&self, key: &K) -> AuthHandle {
        AuthHandle::new(self.sessions.get(key), self.windows)
    }

    /// The state of `key`'s current token, or `None` when its session has no token or is not
    /// in memory.
    pub fn state(&self, key: &K) -> Option<TokenState> {
        let cache = self.sessions.live(key)?;
        AuthHandle::new(cache, self.windows).state()
    }

    /// `key`'s access token as it would be sent now; see [`AuthHandle::access_token`]. `None`
    /// also when its session is not in memory.
    pub fn access_token(&self, key: &K) -> Option<AccessToken> {
        let cache = self.sessions.live(key)?;
        AuthHandle::new(cache, self.windows).access_token()
    }

    /// A token of `key`'s fit to be sent, logging in or refreshing first if needed; see
    /// [`AuthHandle::token`].
    pub async fn token(&self, key: &K) -> Result<TokenState, RefreshError> {
        self.session(key).token().await
    }

    /// Refreshes `key`'s session now; see [`AuthHandle::refresh`].
    pub async fn refresh(&self, key: &K) -> Result<TokenState, RefreshError> {
        self.session(key).refresh().await
    }

    /// Installs tokens `key`'s user obtained elsewhere (an interactive login); see
    /// [`AuthHandle::set_tokens`].
    pub async fn set_tokens(&self, key: &K, tokens: TokenSet) -> Result<TokenState, RefreshError> {
        self.session(key).set_tokens(tokens).await
    }

    /// Forgets `key`'s tokens (and deletes its stored session); see [`AuthHandle::clear`].
    pub async fn clear(&self, key: &K) -> Result<(), RefreshError> {
        self.session(key).clear().await
    }

    /// Ends `key`'s session at the identity provider and here; see [`AuthHandle::logout`].
    pub async fn logout(&self, key: &K) -> Result<(), RefreshError> {
        self.session(key).logout().await
    }

    /// How many sessions are in memory now.
    pub fn live_sessions(&self) -> u64 {
        self.sessions.count()
    }
}

impl<K> Clone for KeyedHandle<K> {
    fn clone(&self) -> Self {
        Self {
            sessions: Arc::clone(&self.sessions),
            windows: self.windows,
        }
    }
}

impl<K> fmt::Debug for KeyedHandle<K>
where
    K: Clone + Hash + Eq + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedHandle")
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}
