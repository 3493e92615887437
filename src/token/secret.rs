//! Strings that must never be printed: tokens and credentials.

use std::fmt;

use zeroize::Zeroizing;

macro_rules! secret_string {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Its `Debug` prints only the type name and the length; the text is wiped from memory
        /// when the value is dropped. Read it with [`secret`](Self::secret).
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(Zeroizing<String>);

        impl $name {
            /// Wraps a secret string.
            pub fn new(value: impl Into<String>) -> Self {
                Self(Zeroizing::new(value.into()))
            }

            /// The secret text. Handle with care: do not log it.
            pub fn secret(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "(<redacted, {} bytes>)"), self.0.len())
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self::new(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self::new(value)
            }
        }
    };
}

secret_string!(
    /// An OAuth2 access token: the credential sent as `Authorization: Bearer …`.
    AccessToken
);

secret_string!(
    /// An OAuth2 refresh token: exchanged at the token endpoint for a new access token.
    RefreshToken
);

secret_string!(
    /// A password or client secret.
    Secret
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_text() {
        let token = AccessToken::new("eyJhbGciOi.secret-payload.sig");
        let shown = format!("{token:?} {:?}", RefreshToken::from("rt-secret"));
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            shown.contains("AccessToken(<redacted, 29 bytes>)"),
            "{shown}"
        );
        assert_eq!(token.secret(), "eyJhbGciOi.secret-payload.sig");
    }
}
