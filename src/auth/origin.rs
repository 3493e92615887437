use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

#[inline]
fn scheme_is_https(uri: &Uri) -> Option<bool> {
    // The standard schemes come as static lowercase text: compared at once.
    match uri.scheme_str()? {
        "https" => Some(true),
        "http" => Some(false),
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

/// The origins a layer sends its token to.
///
/// With no list, the safe default: any `https` origin, and plain `http` only to this machine
/// (`localhost`, `127.0.0.0/8`, `[::1]`): a token never crosses a network in the clear unless
/// the application allows that origin by name. With a list, exactly the origins on it.
///
/// A relative URI (a path only) goes to whatever origin the inner service adds (tonic's and
/// kube's clients do so): with no list it is allowed; with a list, only if the application said
/// where relative URIs go ([`AuthLayer::origin_of_relative`](crate::AuthLayer::origin_of_relative))
/// and that origin is on the list.
#[derive(Clone, Debug, Default)]
pub(crate) struct Origins {
    list: Option<Arc<[Origin]>>,
    relative: Option<Origin>,
    /// Set once the first relative request was sent without the token, to warn only once.
    warned: Arc<AtomicBool>,
}

impl Origins {
    #[inline]
    pub(crate) fn allow(&self, uri: &Uri) -> bool {
        if uri.scheme().is_none() && uri.authority().is_none() {
            return self.allow_relative();
        }
        match &self.list {
            None => safe_default(uri),
            Some(origins) => origins.iter().any(|origin| origin.matches(uri)),
        }
    }

    /// Whether an origin (not a URI) may get the token.
    pub(crate) fn allow_origin(&self, origin: &Origin) -> bool {
        match &self.list {
            None => origin.https || is_loopback(&origin.host),
            Some(origins) => origins.contains(origin),
        }
    }

    /// `uri` made absolute: as it is if it is, else on the origin of relative URIs, if the
    /// layer was told it.
    pub(crate) fn absolute_or_none(&self, uri: &Uri) -> Option<Uri> {
        if uri.scheme().is_some() && uri.authority().is_some() {
            return Some(uri.clone());
        }
        let origin = self.relative.as_ref()?;
        let scheme = if origin.https { "https" } else { "http" };
        let path = uri.path_and_query().map_or("/", |path| path.as_str());
        let host = &origin.host;
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        format!("{scheme}://{host}:{}{path}", origin.port)
            .parse()
            .ok()
    }

    fn allow_relative(&self) -> bool {
        match (&self.relative, &self.list) {
            (Some(origin), _) => self.allow_origin(origin),
            (None, None) => true,
            (None, Some(_)) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "a request with a relative URI was sent without the token: the layer \
                         has an origin allow-list; say where relative URIs go with \
                         `AuthLayer::origin_of_relative`"
                    );
                }
                false
            }
        }
    }

    pub(crate) fn with(&self, origin: Origin) -> Self {
        let mut origins: Vec<Origin> = self.list.as_deref().unwrap_or_default().to_vec();
        if !origins.contains(&origin) {
            origins.push(origin);
        }
        Self {
            list: Some(origins.into()),
            relative: self.relative.clone(),
            warned: Arc::default(),
        }
    }

    pub(crate) fn with_relative(&self, origin: Origin) -> Self {
        Self {
            list: self.list.clone(),
            relative: Some(origin),
            warned: Arc::default(),
        }
    }
}

/// `https` anywhere; `http` only to this machine.
#[inline]
fn safe_default(uri: &Uri) -> bool {
    match scheme_is_https(uri) {
        Some(true) => true,
        Some(false) => uri
            .authority()
            .is_some_and(|authority| is_loopback_authority(authority.as_str().as_bytes())),
        None => false,
    }
}

/// Whether an authority (`[user@]host[:port]`) names this machine: `localhost`,
/// `127.0.0.0/8` or `[::1]`. On the hot path of plain-http requests to this machine, so the
/// common forms are read in one pass: `Uri::host` and the address parser each cost more than
/// the rest of a request's checks together.
fn is_loopback_authority(authority: &[u8]) -> bool {
    // The common ones first, compared whole.
    for host in [&b"127.0.0.1"[..], b"localhost"] {
        if let Some(rest) = authority.strip_prefix(host) {
            match rest {
                [] => return true,
                [b':', port @ ..] if port.iter().all(u8::is_ascii_digit) => return true,
                _ => {}
            }
        }
    }
    match authority {
        // An `@` ends the octets too: `127.0.0.1@elsewhere` is not this machine.
        [b'1', b'2', b'7', b'.', rest @ ..] => is_three_octets(rest),
        _ => is_loopback(host_of(authority)),
    }
}

/// The host of an authority, brackets kept for IPv6.
fn host_of(authority: &[u8]) -> &str {
    let host = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let host = if host.first() == Some(&b'[') {
        host.iter()
            .position(|&b| b == b']')
            .map_or(host, |end| &host[..=end])
    } else {
        host.iter()
            .position(|&b| b == b':')
            .map_or(host, |colon| &host[..colon])
    };
    std::str::from_utf8(host).unwrap_or_default()
}

/// `localhost`, `127.0.0.0/8` or `[::1]`, for hosts as `Origin` keeps them.
fn is_loopback(host: &str) -> bool {
    if let Some(rest) = host.strip_prefix("127.") {
        return !rest.contains(':') && is_three_octets(rest.as_bytes());
    }
    host.eq_ignore_ascii_case("localhost")
        || host
            .strip_prefix('[')
            .and_then(|host| host.strip_suffix(']'))
            .and_then(|host| host.parse::<IpAddr>().ok())
            .is_some_and(|ip| ip.is_loopback())
}

/// `a.b.c`, each a decimal octet without a leading zero, then the end or a `:port`. Anything
/// else after the octets (a `:` that starts a password, an `@`) is not this machine: the host
/// is what follows the user info.
fn is_three_octets(text: &[u8]) -> bool {
    let (mut octets, mut value, mut digits) = (0, 0u32, 0);
    for (index, &b) in text.iter().enumerate() {
        match b {
            b'0'..=b'9' => {
                if digits == 1 && value == 0 {
                    return false;
                }
                value = value * 10 + u32::from(b - b'0');
                digits += 1;
                if value > 255 {
                    return false;
                }
            }
            b'.' if digits > 0 && octets < 2 => {
                octets += 1;
                (value, digits) = (0, 0);
            }
            b':' if digits > 0 && octets == 2 => {
                let port = &text[index + 1..];
                return port.iter().all(u8::is_ascii_digit);
            }
            _ => return false,
        }
    }
    digits > 0 && octets == 2
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
    fn the_default_sends_the_token_over_https_or_to_this_machine_only() {
        let default = Origins::default();
        for uri in [
            "https://api.mangadex.org/user/me",
            "http://127.0.0.1:8080/x",
            "http://127.3.0.1/x",
            "http://localhost/x",
            "http://[::1]:80/x",
            "http://[0:0:0:0:0:0:0:1]/x",
            "http://LOCALHOST/x",
            "http://127.255.10.0/x",
            "http://user@127.0.0.1:80/x",
            "http://localhost:8080/x",
            "/relative/path",
        ] {
            assert!(default.allow(&uri.parse().unwrap()), "{uri}");
        }
        for uri in [
            "http://api.mangadex.org/user/me",
            "http://10.0.0.1/x",
            "http://127.0.0.1.evil.example/x",
            "http://127.0.0.256/x",
            "http://127.0.0/x",
            "http://127.00.0.1/x",
            "http://127.0.0.1@elsewhere.example/x",
            "http://127.0.0.1:x@elsewhere.example/x",
            "http://127.0.0.1:80@10.1.2.3/x",
            "http://127.0.0.1:@203.0.113.7:8080/x",
            "http://[::2]/x",
            "ws://127.0.0.1/x",
        ] {
            assert!(!default.allow(&uri.parse().unwrap()), "{uri}");
        }
    }

    #[test]
    fn relative_uris_with_a_list_need_a_named_origin() {
        let api = Origin::from_static("https://api.example");
        let listed = Origins::default().with(api.clone());
        let relative: Uri = "/pkg.Service/Method".parse().unwrap();
        assert!(!listed.allow(&relative));
        assert!(listed.with_relative(api.clone()).allow(&relative));
        let elsewhere = Origin::from_static("https://other.example");
        assert!(!listed.with_relative(elsewhere).allow(&relative));
        assert!(
            !Origins::default()
                .with_relative(Origin::from_static("http://remote.example"))
                .allow(&relative),
            "plain http to another machine is refused by default"
        );
    }

    #[test]
    fn an_empty_list_allows_by_default_and_a_list_only_its_origins() {
        let uri: Uri = "https://a.example/x".parse().unwrap();
        assert!(Origins::default().allow(&uri));
        let only_b = Origins::default().with(Origin::from_static("https://b.example"));
        assert!(!only_b.allow(&uri));
        let both = only_b.with(Origin::from_static("https://a.example"));
        assert!(both.allow(&uri));
    }
}
