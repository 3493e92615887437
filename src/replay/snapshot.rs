//! What [`CloneBody`](super::CloneBody) keeps of a request: cheap to take, rebuilt only for a
//! retry.
//!
//! Cloning a whole `Request` copies its header map (two allocations) and promotes the `Bytes`
//! behind its URI and each header value to shared storage (one allocation each, the first time).
//! Every request pays that before it is sent, though few are ever retried. A snapshot copies the
//! text instead, the URI and every header name and value, into one buffer (a spare one of
//! 256 bytes that an earlier request gave back on this thread, or one of the exact size for a
//! longer text or when the thread has none), and keeps the method, the version, the extensions and a clone of the body;
//! the `Request` is made again from it only when a rejection calls for a retry.

use std::fmt;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Extensions, HeaderMap, Method, Request, Uri, Version};

use super::spare::{Text, Writer};

/// A request as kept for a retry by [`CloneBody`](super::CloneBody): the URI and every header
/// name and value copied into one buffer (given back, wiped, to the spares of the thread that
/// drops it), the method (as a code, or its
/// name in the buffer), the version, the extensions and a clone of the body; the `Request`
/// is made again only for a retry. Small, as it is moved with the response future (a larger
/// one measured slower): 64 bytes with a `Bytes` or `Full<Bytes>` body.
pub struct Snapshot<B> {
    /// An extension method's name, then the URI, then for each header: the name's length and
    /// the value's (both `u16`), a flag (sensitive), the name and the value.
    text: Text,
    extensions: Extensions,
    body: B,
    /// The length of the method's name in `text` (0 for a standard method).
    method_len: u16,
    uri_len: u16,
    /// How many header values (a repeated name counts once per value).
    headers: u16,
    method: u8,
    version: Version,
}

const SENSITIVE: u8 = 1;

/// The standard methods, by code; an extension method's name is kept in the text.
const METHODS: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::HEAD,
    Method::OPTIONS,
    Method::TRACE,
    Method::CONNECT,
];
const EXTENSION_METHOD: u8 = u8::MAX;

impl<B> Snapshot<B> {
    /// A snapshot of `request`, with `body` (a copy of its body). `None` if a part is too
    /// long to keep (a header or a method name over 64 KiB, more than 65,535 header values), or
    /// if the URI's text would not read back as the same URI (a path that does not start with
    /// `/` after an authority, such as HTTP/2's `*`, or one that could read back as an
    /// authority): such a request is not retried.
    #[inline]
    pub(crate) fn of<A>(request: &Request<A>, body: B) -> Option<Self> {
        let method = request.method();
        let (code, method_name) = match METHODS.iter().position(|m| m == method) {
            Some(code) => (code as u8, &b""[..]),
            None => (EXTENSION_METHOD, method.as_str().as_bytes()),
        };
        let uri = UriText::of(request.uri());
        if !uri.reads_back() {
            return None;
        }
        let headers = request.headers();
        let (method_len, uri_len, count) = (
            u16::try_from(method_name.len()).ok()?,
            u16::try_from(uri.len()).ok()?,
            u16::try_from(headers.len()).ok()?,
        );
        // Most texts fit in a spare buffer: written at once, without counting first. A longer
        // one, or one on a thread with none to spare, is counted and gets its own.
        let mut text = Text::spare();
        match write(&mut text.writer(), method_name, &uri, headers) {
            Ok(()) => {}
            Err(Unwritten::TooLong) => return None,
            Err(Unwritten::Full) => {
                let mut size = method_name.len() + uri.len();
                for (name, value) in headers {
                    size += 5 + name.as_str().len() + value.len();
                }
                text = Text::of_len(size);
                write(&mut text.writer(), method_name, &uri, headers).ok()?;
            }
        }
        Some(Self {
            method: code,
            method_len,
            version: request.version(),
            uri_len,
            headers: count,
            text,
            extensions: request.extensions().clone(),
            body,
        })
    }

    /// The body kept.
    pub(crate) fn body(&self) -> &B {
        &self.body
    }

    /// The request again; `None` if its parts no longer parse (they always do: they came
    /// from a request).
    pub(crate) fn into_request(self) -> Option<Request<B>> {
        let (method, rest) = self
            .text
            .bytes()
            .split_at_checked(usize::from(self.method_len))?;
        let method = match METHODS.get(usize::from(self.method)) {
            Some(method) => method.clone(),
            None => Method::from_bytes(method).ok()?,
        };
        let (uri, mut rest) = rest.split_at_checked(usize::from(self.uri_len))?;
        let uri = Uri::from_maybe_shared(Bytes::copy_from_slice(uri)).ok()?;
        // The capacity counts names, and one name may have more values than a map may have
        // names: only a hint.
        let mut headers =
            HeaderMap::try_with_capacity(usize::from(self.headers)).unwrap_or_default();
        for _ in 0..self.headers {
            let (lengths, after) = rest.split_at_checked(5)?;
            let name_len = usize::from(u16::from_le_bytes([lengths[0], lengths[1]]));
            let value_len = usize::from(u16::from_le_bytes([lengths[2], lengths[3]]));
            let (name, after) = after.split_at_checked(name_len)?;
            let (value, after) = after.split_at_checked(value_len)?;
            rest = after;
            let name = HeaderName::from_bytes(name).ok()?;
            let mut value = HeaderValue::from_bytes(value).ok()?;
            value.set_sensitive(lengths[4] & SENSITIVE != 0);
            headers.try_append(name, value).ok()?;
        }
        let mut request = Request::new(self.body);
        *request.method_mut() = method;
        *request.version_mut() = self.version;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        *request.extensions_mut() = self.extensions;
        Some(request)
    }
}

/// Why a text was not written.
enum Unwritten {
    /// Longer than its buffer: it needs one of its exact length.
    Full,
    /// A header too long to keep (over 64 KiB).
    TooLong,
}

/// Writes a snapshot's text: the method's name, the URI, then each header.
#[inline]
fn write(
    writer: &mut Writer<'_>,
    method_name: &[u8],
    uri: &UriText<'_>,
    headers: &HeaderMap,
) -> Result<(), Unwritten> {
    // A standard method has no name in the text; a request may have no headers.
    if !method_name.is_empty() {
        writer.put(method_name).ok_or(Unwritten::Full)?;
    }
    uri.write(writer).ok_or(Unwritten::Full)?;
    if headers.is_empty() {
        return Ok(());
    }
    for (name, value) in headers {
        let (name, value_bytes) = (name.as_str().as_bytes(), value.as_bytes());
        let length = |part: &[u8]| u16::try_from(part.len()).map_err(|_| Unwritten::TooLong);
        let ([n0, n1], [v0, v1]) = (
            length(name)?.to_le_bytes(),
            length(value_bytes)?.to_le_bytes(),
        );
        let flags = if value.is_sensitive() { SENSITIVE } else { 0 };
        writer
            .put(&[n0, n1, v0, v1, flags])
            .and_then(|()| writer.put(name))
            .and_then(|()| writer.put(value_bytes))
            .ok_or(Unwritten::Full)?;
    }
    Ok(())
}

/// A URI's text, in parts, as `Display` writes it (without allocating a `String`).
struct UriText<'a> {
    scheme: Option<&'a str>,
    authority: Option<&'a str>,
    path_and_query: Option<&'a str>,
}

impl<'a> UriText<'a> {
    #[inline]
    fn of(uri: &'a Uri) -> Self {
        Self {
            scheme: uri.scheme_str(),
            authority: uri.authority().map(|authority| authority.as_str()),
            path_and_query: uri.path_and_query().map(|path| path.as_str()),
        }
    }

    /// Whether the text reads back as this URI. After an authority, the path must start with
    /// `/` or `?` (`https://a.example` and `*` would read back as the authority `a.example*`);
    /// without one, it must start with `/` or be `*` (older `http` releases accept a path
    /// such as `api.example:443`, which would read back as an authority).
    #[inline]
    fn reads_back(&self) -> bool {
        match (self.authority, self.path_and_query) {
            (Some(_), Some(path)) => matches!(path.as_bytes().first(), None | Some(b'/' | b'?')),
            (Some(_), None) => true,
            (None, Some(path)) => path.starts_with('/') || path == "*",
            (None, None) => false,
        }
    }

    #[inline]
    fn len(&self) -> usize {
        self.scheme.map_or(0, |scheme| scheme.len() + 3)
            + self.authority.map_or(0, str::len)
            + self.path_and_query.map_or(0, str::len)
    }

    #[inline]
    fn write(&self, text: &mut Writer<'_>) -> Option<()> {
        match self.scheme {
            // One copy for the common schemes.
            Some("https") => text.put(b"https://")?,
            Some("http") => text.put(b"http://")?,
            Some(scheme) => {
                text.put(scheme.as_bytes())?;
                text.put(b"://")?;
            }
            None => {}
        }
        if let Some(authority) = self.authority {
            text.put(authority.as_bytes())?;
        }
        if let Some(path) = self.path_and_query {
            text.put(path.as_bytes())?;
        }
        Some(())
    }
}

impl<B> fmt::Debug for Snapshot<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The text holds header values: the `Authorization` of a request that had one, cookies.
        let method = METHODS
            .get(usize::from(self.method))
            .map_or("(extension)", Method::as_str);
        f.debug_struct("Snapshot")
            .field("method", &method)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Marker(u32);

    fn same<B: PartialEq + fmt::Debug>(a: &Request<B>, b: &Request<B>) {
        assert_eq!(a.method(), b.method());
        assert_eq!(a.uri(), b.uri());
        assert_eq!(a.version(), b.version());
        assert_eq!(a.body(), b.body());
        let pairs = |r: &Request<B>| {
            r.headers()
                .iter()
                .map(|(n, v)| (n.clone(), v.clone(), v.is_sensitive()))
                .collect::<Vec<_>>()
        };
        assert_eq!(pairs(a), pairs(b));
    }

    #[test]
    fn a_request_comes_back_whole() {
        let mut request = Request::post("https://api.example:8443/a/b?c=d&e")
            .version(Version::HTTP_2)
            .header("accept", "application/json")
            .header("x-many", "one")
            .header("x-many", "two")
            .header("x-binary", HeaderValue::from_bytes(b"\xfa\xfb").unwrap())
            .extension(Marker(7))
            .body(String::from("{\"n\":1}"))
            .unwrap();
        let mut secret = HeaderValue::from_static("Basic c2VjcmV0");
        secret.set_sensitive(true);
        request.headers_mut().insert("proxy-authorization", secret);
        let kept = Snapshot::of(&request, request.body().clone()).unwrap();
        let again = kept.into_request().unwrap();
        same(&request, &again);
        assert_eq!(again.extensions().get::<Marker>(), Some(&Marker(7)));
        assert!(
            again
                .headers()
                .get("proxy-authorization")
                .unwrap()
                .is_sensitive()
        );
    }

    // With no spare buffer on the thread (many requests in flight on it), the text gets one of
    // its own length, and comes back the same; so does one that fills a spare buffer exactly,
    // or by one byte too many.
    #[test]
    fn a_text_comes_back_whole_from_either_buffer() {
        let request = |value_len: usize| {
            Request::put("https://api.example/a?b=c")
                .header("x-fill", "v".repeat(value_len))
                .header("accept", "*/*")
                .body(String::from("body"))
                .unwrap()
        };
        // The text: the URI (25), then per header 5 bytes, its name and its value.
        let fixed = 25 + 5 + "x-fill".len() + 5 + "accept".len() + "*/*".len();
        // Spare buffers for the first texts: each one going leaves one in its place.
        drop(Text::of_len(1));
        assert_eq!(Text::spare().bytes().len(), super::super::spare::SIZE);
        for value_len in [
            0,
            10,
            super::super::spare::SIZE - fixed,
            super::super::spare::SIZE - fixed + 1,
        ] {
            let request = request(value_len);
            let kept = Snapshot::of(&request, request.body().clone()).unwrap();
            same(&request, &kept.into_request().unwrap());
        }
        let held: Vec<Text> = (0..100).map(|_| Text::spare()).collect();
        assert!(Text::spare().bytes().is_empty(), "none left to spare");
        for value_len in [0, 10, 1_000] {
            let request = request(value_len);
            let kept = Snapshot::of(&request, request.body().clone()).unwrap();
            same(&request, &kept.into_request().unwrap());
        }
        drop(held);
    }

    #[test]
    fn relative_uris_and_methods_of_any_name() {
        let request = Request::builder()
            .method(Method::from_bytes(b"PURGE").unwrap())
            .uri("/pkg.Service/Method")
            .body(())
            .unwrap();
        let again = Snapshot::of(&request, ()).unwrap().into_request().unwrap();
        same(&request, &again);
        let star = Request::options("*").body(()).unwrap();
        same(
            &star,
            &Snapshot::of(&star, ()).unwrap().into_request().unwrap(),
        );
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_snapshot_stays_small() {
        assert!(std::mem::size_of::<Snapshot<Bytes>>() <= 64);
    }

    #[test]
    fn many_values_of_one_header_come_back() {
        // More values than a `HeaderMap` made `with_capacity` of their number may hold (it
        // counts entries by name): the retry must neither panic nor lose one.
        let mut request = Request::get("https://a.example/").body(()).unwrap();
        for value in 0..30_000_u32 {
            request
                .headers_mut()
                .append("x-a", HeaderValue::from(value));
        }
        let kept = Snapshot::of(&request, ()).unwrap();
        same(&request, &kept.into_request().unwrap());
    }

    #[test]
    fn a_path_the_text_would_merge_into_the_authority_is_not_kept() {
        // `https://a.example` with the path `*` (HTTP/2's `OPTIONS *`): as text it reads back
        // as the authority `a.example*`. Such a request is not retried rather than retried
        // elsewhere.
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(http::uri::Scheme::HTTPS);
        parts.authority = Some(http::uri::Authority::from_static("a.example"));
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("*"));
        let mut request = Request::options("/").body(()).unwrap();
        *request.uri_mut() = Uri::from_parts(parts).unwrap();
        assert!(Snapshot::of(&request, ()).is_none());
        // A query right after the authority reads back as it was.
        let request = Request::get("https://a.example?a=1").body(()).unwrap();
        same(
            &request,
            &Snapshot::of(&request, ()).unwrap().into_request().unwrap(),
        );
    }

    #[test]
    fn a_path_without_authority_that_could_read_back_as_one_is_not_kept() {
        // Older `http` releases (before 1.4.1) accept paths without a leading `/`; as text,
        // `api.example:443` would read back as an authority, and the retry would go there.
        // Whatever this `http` accepts, such a request is never kept.
        for path in ["?a=1", "ab", "*a", "api.example:443", ""] {
            let Ok(path) = http::uri::PathAndQuery::try_from(path) else {
                continue;
            };
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(path);
            let Ok(uri) = Uri::from_parts(parts) else {
                continue;
            };
            let mut request = Request::get("/").body(()).unwrap();
            *request.uri_mut() = uri;
            assert!(Snapshot::of(&request, ()).is_none(), "{}", request.uri());
        }
        for kept in ["/", "/a?b", "*"] {
            let request = Request::get(kept).body(()).unwrap();
            same(
                &request,
                &Snapshot::of(&request, ()).unwrap().into_request().unwrap(),
            );
        }
    }

    #[test]
    fn every_method_comes_back() {
        let extension = Method::from_bytes(b"A-VERY-LONG-EXTENSION-METHOD-NAME").unwrap();
        for method in METHODS.iter().chain([&extension]) {
            let request = Request::builder()
                .method(method.clone())
                .uri("https://a.example/x")
                .header("accept", "*/*")
                .body(())
                .unwrap();
            same(
                &request,
                &Snapshot::of(&request, ()).unwrap().into_request().unwrap(),
            );
        }
    }

    #[test]
    fn debug_shows_no_header_value() {
        let request = Request::get("https://a.example/")
            .header("cookie", "session=secret-value")
            .body(())
            .unwrap();
        let shown = format!("{:?}", Snapshot::of(&request, ()).unwrap());
        assert!(!shown.contains("secret"), "{shown}");
    }
}
