//! Unique, unpredictable-enough identifiers (not cryptographic).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Hashes a counter with randomly keyed SipHash: distinct values, different every run.
#[derive(Debug)]
pub(super) struct Ids {
    keys: RandomState,
    counter: u64,
}

impl Ids {
    pub(super) fn new() -> Self {
        Self {
            keys: RandomState::new(),
            counter: 0,
        }
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        self.keys.hash_one(self.counter)
    }

    /// A random-looking version 4 UUID string, e.g. `1b4e28ba-2fa1-41d2-883f-0016d3cca427`.
    pub(super) fn uuid(&mut self) -> String {
        let high = self.next_u64();
        let low = self.next_u64();
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            high >> 32,
            (high >> 16) & 0xffff,
            (high & 0x0fff) | 0x4000,
            ((low >> 48) & 0x3fff) | 0x8000,
            low & 0xffff_ffff_ffff,
        )
    }

    /// 32 random-looking bytes, base64url-encoded without padding: a fake JWT signature.
    pub(super) fn signature(&mut self) -> String {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        URL_SAFE_NO_PAD.encode(bytes)
    }
}
