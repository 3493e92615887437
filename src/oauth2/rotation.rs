//! Refresh tokens the server rotated out in answers the refresher refused.
//!
//! A refresh answer can be refused (no usable access token) after the server rotated the
//! refresh token: the old one is spent, the answer's new one is the live one. The error
//! carries the new one for the token cache to keep; this memory makes the refresher itself
//! safe whatever its caller does with it: asked again with a spent token, it presents the
//! live one, so a retry never sets off reuse detection.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::token::RefreshToken;

/// A spent refresh token presented again more than this many rotations back is forgotten.
const LONGEST_CHAIN: usize = 8;

/// The latest chain of rotations seen in refused answers: the spent tokens and the live one.
#[derive(Default)]
pub(super) struct Rotations(Mutex<Option<Chain>>);

struct Chain {
    spent: VecDeque<RefreshToken>,
    live: RefreshToken,
}

impl Rotations {
    fn lock(&self) -> MutexGuard<'_, Option<Chain>> {
        // Nothing panics while holding the lock; a poisoned memory is still a valid one.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live refresh token that replaced `held`, if `held` was rotated out in a refused
    /// answer.
    pub(super) fn replacement(&self, held: &RefreshToken) -> Option<RefreshToken> {
        let chain = self.lock();
        let chain = chain.as_ref()?;
        chain.spent.contains(held).then(|| chain.live.clone())
    }

    /// The server answered a refresh with `presented` by issuing `issued`, in an answer that
    /// was refused.
    pub(super) fn rotated(&self, presented: &RefreshToken, issued: &RefreshToken) {
        if presented == issued {
            return;
        }
        let mut chain = self.lock();
        match chain.as_mut() {
            Some(chain) if chain.live == *presented || chain.spent.contains(presented) => {
                if !chain.spent.contains(presented) {
                    chain.spent.push_back(presented.clone());
                }
                if chain.spent.len() > LONGEST_CHAIN {
                    chain.spent.pop_front();
                }
                chain.live = issued.clone();
            }
            _ => {
                *chain = Some(Chain {
                    spent: VecDeque::from([presented.clone()]),
                    live: issued.clone(),
                });
            }
        }
    }

    /// A refresh with `presented` was settled (answered with tokens, or its refresh token
    /// refused): the caller now holds the truth, and the chain it was part of is done.
    pub(super) fn settled(&self, presented: &RefreshToken) {
        let mut chain = self.lock();
        if chain
            .as_ref()
            .is_some_and(|chain| chain.live == *presented || chain.spent.contains(presented))
        {
            *chain = None;
        }
    }
}

impl fmt::Debug for Rotations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spent = self.lock().as_ref().map_or(0, |chain| chain.spent.len());
        f.debug_struct("Rotations").field("spent", &spent).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> RefreshToken {
        RefreshToken::new(text)
    }

    #[test]
    fn a_spent_token_is_replaced_by_the_latest_live_one() {
        let rotations = Rotations::default();
        assert_eq!(rotations.replacement(&token("r1")), None);
        rotations.rotated(&token("r1"), &token("r2"));
        assert_eq!(rotations.replacement(&token("r1")), Some(token("r2")));
        assert_eq!(rotations.replacement(&token("r2")), None, "r2 is live");
        // Presented r2 (the replacement), refused again with r3: r1 and r2 lead to r3.
        rotations.rotated(&token("r2"), &token("r3"));
        assert_eq!(rotations.replacement(&token("r1")), Some(token("r3")));
        assert_eq!(rotations.replacement(&token("r2")), Some(token("r3")));
        rotations.settled(&token("r3"));
        assert_eq!(rotations.replacement(&token("r1")), None);
    }

    #[test]
    fn an_unrelated_settlement_keeps_the_chain() {
        let rotations = Rotations::default();
        rotations.rotated(&token("a1"), &token("a2"));
        rotations.settled(&token("b1"));
        assert_eq!(rotations.replacement(&token("a1")), Some(token("a2")));
        // A server that sends the same refresh token back rotated nothing.
        let same = Rotations::default();
        same.rotated(&token("c1"), &token("c1"));
        assert_eq!(same.replacement(&token("c1")), None);
    }

    #[test]
    fn the_chain_is_bounded_and_shows_no_token() {
        let rotations = Rotations::default();
        for n in 0..20 {
            rotations.rotated(&token(&format!("t{n}")), &token(&format!("t{}", n + 1)));
        }
        assert_eq!(rotations.replacement(&token("t19")), Some(token("t20")));
        assert_eq!(rotations.replacement(&token("t0")), None, "forgotten");
        let shown = format!("{rotations:?}");
        assert_eq!(shown, "Rotations { spent: 8 }");
    }
}
