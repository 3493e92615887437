use std::fmt;
use std::sync::Arc;

use http::Uri;

/// A scheme, host and port: where a request goes. The token is sent only to the origins a
/// layer allows ([`AuthLayer::allow_origin`](crate::AuthLayer::allow_origin)).
///
/// ```
/// use tower_auth_refresh::Origin;
///
/// let api = Origin::parse("https://api.mangadex.org")?;
/// assert!(api.matches(&"https://api.mangadex.org:443/user/me".parse()?));
/// assert!(!api.matches(&"https://uploads.mangadex.org/covers".parse()?));
/// assert!(!api.matches(&"http://api.mangadex.org/user/me".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    https: bool,
    host: Box<str>,
    port: u16,
}

/// The text given to [`Origin::parse`] is not an `http` or `https` origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidOrigin(());

impl fmt::Display for InvalidOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an http(s) origin such as `https://api.example.com`")
    }
}

impl std::error::Error for InvalidOrigin {}

impl Origin {
    /// Parses `scheme://host[:port]` (a trailing `/` is allowed; no path, query or user info).
    pub fn parse(origin: &str) -> Result<Self, InvalidOrigin> {
        let uri: Uri = origin.parse().map_err(|_| InvalidOrigin(()))?;
        let has_path = uri.path_and_query().is_some_and(|p| p.as_str() != "/");
        let has_user = uri.authority().is_some_and(|a| a.as_str().contains('@'));
        if has_path || has_user {
            return Err(InvalidOrigin(()));
        }
        Self::of(&uri).ok_or(InvalidOrigin(()))
    }

    /// Like [`parse`](Self::parse), for constants; panics if `origin` is not an origin.
    pub fn from_static(origin: &'static str) -> Self {
        Self::parse(origin).expect("a valid origin")
    }

    /// The origin of an absolute `http` or `https` URI.
    pub fn of(uri: &Uri) -> Option<Self> {
        let https = scheme_is_https(uri)?;
        // A port that is not a `u16` (`:99999`) is not read as the default port.
        let authority = uri.authority()?.as_str();
        let written_port = authority
            .rsplit_once(':')
            .filter(|(_, port)| !port.ends_with(']'))
            .is_some();
        if written_port && uri.port_u16().is_none() {
            return None;
        }
        let host = uri.host()?;
        if host.is_empty() {
            return None;
        }
        Some(Self {
            https,
            host: host.to_ascii_lowercase().into(),
            port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
        })
    }

    /// Whether `uri` goes to this origin. Relative URIs never match.
    pub fn matches(&self, uri: &Uri) -> bool {
        scheme_is_https(uri) == Some(self.https)
            && uri
                .host()
                .is_some_and(|host| host.eq_ignore_ascii_case(&self.host))
            && uri.port_u16().unwrap_or(if self.https { 443 } else { 80 }) == self.port
    }
}

fn scheme_is_https(uri: &Uri) -> Option<bool> {
    match uri.scheme_str()? {
        scheme if scheme.eq_ignore_ascii_case("https") => Some(true),
        scheme if scheme.eq_ignore_ascii_case("http") => Some(false),
        _ => None,
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// The origins a layer sends its token to; `None` is every origin.
#[derive(Clone, Debug, Default)]
pub(crate) struct Origins(Option<Arc<[Origin]>>);

impl Origins {
    #[inline]
    pub(crate) fn allow(&self, uri: &Uri) -> bool {
        match &self.0 {
            None => true,
            Some(origins) => origins.iter().any(|origin| origin.matches(uri)),
        }
    }

    pub(crate) fn with(&self, origin: Origin) -> Self {
        let mut origins: Vec<Origin> = self.0.as_deref().unwrap_or_default().to_vec();
        if !origins.contains(&origin) {
            origins.push(origin);
        }
        Self(Some(origins.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches_with_default_ports() {
        let api = Origin::parse("https://API.mangadex.org/").unwrap();
        assert_eq!(api.to_string(), "https://api.mangadex.org:443");
        for uri in [
            "https://api.mangadex.org/user/me",
            "https://api.mangadex.org:443/user/me?x=1",
            "HTTPS://Api.MangaDex.org/",
        ] {
            assert!(api.matches(&uri.parse().unwrap()), "{uri}");
        }
        for uri in [
            "http://api.mangadex.org/user/me",
            "https://api.mangadex.org:8443/",
            "https://api.mangadex.org.evil.example/",
            "https://evil.example/?https://api.mangadex.org",
            "/user/me",
        ] {
            assert!(!api.matches(&uri.parse().unwrap()), "{uri}");
        }
        let local = Origin::parse("http://127.0.0.1:8080").unwrap();
        assert!(local.matches(&"http://127.0.0.1:8080/echo".parse().unwrap()));
        assert!(!local.matches(&"http://127.0.0.1:8081/echo".parse().unwrap()));
    }

    #[test]
    fn rejects_what_is_not_an_origin() {
        for text in [
            "api.mangadex.org",
            "ftp://api.mangadex.org",
            "https://api.mangadex.org/user",
            "https://user:pw@api.mangadex.org",
            "https://",
            "https://api.mangadex.org:99999",
            "",
        ] {
            assert!(Origin::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn an_empty_list_allows_everything_and_a_list_only_its_origins() {
        let uri: Uri = "https://a.example/x".parse().unwrap();
        assert!(Origins::default().allow(&uri));
        let only_b = Origins::default().with(Origin::from_static("https://b.example"));
        assert!(!only_b.allow(&uri));
        let both = only_b.with(Origin::from_static("https://a.example"));
        assert!(both.allow(&uri));
    }
}
