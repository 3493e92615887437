//! The nonces servers gave (RFC 9449 §8, §9): the latest one per origin.
//!
//! A server may send a new `DPoP-Nonce` on any response, a success included, and the next
//! proof to that server must carry it; servers do not share nonces, so an identity provider's
//! nonce never goes to the API. The store is small (a client talks to a few servers) and
//! bounded: past [`MAX_ORIGINS`], the origin heard from least recently is forgotten.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http::HeaderMap;

/// The response header that carries a nonce.
pub(super) const DPOP_NONCE: &str = "dpop-nonce";
/// Origins whose nonce is kept.
const MAX_ORIGINS: usize = 32;
/// Longer nonces are not kept (RFC 9449 sets no limit; real ones are tens of characters).
const MAX_NONCE_LEN: usize = 1024;

/// The latest nonce of each origin, the most recent last.
#[derive(Default)]
pub(super) struct Nonces(Mutex<Vec<(String, Arc<str>)>>);

impl Nonces {
    fn lock(&self) -> MutexGuard<'_, Vec<(String, Arc<str>)>> {
        // Nothing panics while holding the lock; a poisoned store is still a valid one.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The nonce `origin` gave last, if any.
    pub(super) fn get(&self, origin: &str) -> Option<Arc<str>> {
        self.lock()
            .iter()
            .find(|(known, _)| known == origin)
            .map(|(_, nonce)| Arc::clone(nonce))
    }

    /// Keeps the nonce of `headers` (the last valid `DPoP-Nonce`) as `origin`'s; returns whether
    /// it is a new one.
    pub(super) fn observe(&self, origin: &str, headers: &HeaderMap) -> bool {
        let Some(nonce) = headers
            .get_all(DPOP_NONCE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .map(str::trim)
            .rfind(|nonce| is_nonce(nonce))
        else {
            return false;
        };
        let mut nonces = self.lock();
        let known = nonces.iter().position(|(known, _)| known == origin);
        if let Some(index) = known {
            let (_, current) = &nonces[index];
            if &**current == nonce {
                return false;
            }
            nonces.remove(index);
        } else if nonces.len() >= MAX_ORIGINS {
            nonces.remove(0);
        }
        nonces.push((origin.to_owned(), Arc::from(nonce)));
        true
    }
}

/// RFC 9449 §8.1: `nonce = 1*NQCHAR`, NQCHAR being `%x21 / %x23-5B / %x5D-7E`.
fn is_nonce(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_NONCE_LEN
        && text
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(nonces: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for nonce in nonces {
            headers.append(DPOP_NONCE, HeaderValue::from_str(nonce).unwrap());
        }
        headers
    }

    #[test]
    fn the_latest_nonce_per_origin() {
        let nonces = Nonces::default();
        assert!(nonces.observe("https://as.example", &headers(&["n1"])));
        assert!(
            !nonces.observe("https://as.example", &headers(&["n1"])),
            "same"
        );
        assert!(nonces.observe("https://rs.example", &headers(&["r1"])));
        assert!(nonces.observe("https://as.example", &headers(&["n2"])));
        assert_eq!(nonces.get("https://as.example").as_deref(), Some("n2"));
        assert_eq!(nonces.get("https://rs.example").as_deref(), Some("r1"));
        assert_eq!(nonces.get("https://other.example"), None);
        // No header: the nonce stays.
        assert!(!nonces.observe("https://as.example", &HeaderMap::new()));
        assert_eq!(nonces.get("https://as.example").as_deref(), Some("n2"));
    }

    #[test]
    fn invalid_nonces_are_ignored() {
        let nonces = Nonces::default();
        let long = "n".repeat(MAX_NONCE_LEN + 1);
        for bad in ["", "a b", "quo\"te", "back\\slash", long.as_str()] {
            assert!(
                !nonces.observe("https://as.example", &headers(&[bad])),
                "{bad:?}"
            );
        }
        assert_eq!(nonces.get("https://as.example"), None);
        // Several headers: the last valid one.
        assert!(nonces.observe("https://as.example", &headers(&["first", "a b"])));
        assert_eq!(nonces.get("https://as.example").as_deref(), Some("first"));
        assert!(is_nonce("eyJ7S_zG.eyJH0-Z.HX4w-7v"));
    }

    #[test]
    fn the_store_is_bounded() {
        let nonces = Nonces::default();
        for n in 0..MAX_ORIGINS + 5 {
            nonces.observe(&format!("https://{n}.example"), &headers(&["x"]));
        }
        assert_eq!(nonces.lock().len(), MAX_ORIGINS);
        assert_eq!(nonces.get("https://0.example"), None, "the oldest went");
        let last = format!("https://{}.example", MAX_ORIGINS + 4);
        assert!(nonces.get(&last).is_some());
    }
}
