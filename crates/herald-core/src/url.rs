//! Webhook endpoint URLs: the shape a URL must have before Herald will POST to it.
//!
//! Whether the address behind it may be reached is a separate question, answered by
//! [`crate::net::AddressPolicy`] at registration and again at connect time.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::{Host, Url};

/// Longest URL accepted, before and after normalisation; browsers and proxies commonly cap URLs
/// near here, and a longer one is almost certainly a mistake.
pub const WEBHOOK_URL_MAX_LEN: usize = 2048;

/// Why a piece of text is not a usable webhook URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("URL must be at most {max} characters, found {len}", max = WEBHOOK_URL_MAX_LEN)]
    TooLong { len: usize },
    #[error("not a valid absolute URL: {0}")]
    Malformed(url::ParseError),
    #[error("URL scheme must be http or https, found `{0}`")]
    Scheme(String),
    #[error("URL must have a host")]
    MissingHost,
    #[error("URL must not contain a user name or password; use the signature to authenticate")]
    Credentials,
    #[error("URL must not contain a fragment (`#…`); it is never sent to the server")]
    Fragment,
}

/// An absolute http(s) URL with a host, no credentials and no fragment.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WebhookUrl {
    url: Url,
    /// Copied out of `url` so that `host()` needs no fallible lookup.
    host: Host<String>,
}

impl WebhookUrl {
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        if text.len() > WEBHOOK_URL_MAX_LEN {
            return Err(UrlError::TooLong { len: text.len() });
        }
        let url = Url::parse(text).map_err(UrlError::Malformed)?;
        Self::try_from(url)
    }

    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    pub fn as_url(&self) -> &Url {
        &self.url
    }

    /// The host: a DNS name (lower-cased, IDNA-encoded) or an IP literal. The `url` crate already
    /// turns IPv4 spellings such as `2130706433`, `0177.0.0.1` and `0x7f.1` into addresses.
    pub fn host(&self) -> Host<&str> {
        match &self.host {
            Host::Domain(name) => Host::Domain(name),
            Host::Ipv4(addr) => Host::Ipv4(*addr),
            Host::Ipv6(addr) => Host::Ipv6(*addr),
        }
    }

    pub fn port_or_default(&self) -> u16 {
        self.url
            .port_or_known_default()
            .unwrap_or(if self.is_https() { 443 } else { 80 })
    }

    pub fn is_https(&self) -> bool {
        self.url.scheme() == "https"
    }
}

impl TryFrom<Url> for WebhookUrl {
    type Error = UrlError;

    fn try_from(url: Url) -> Result<Self, Self::Error> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::Scheme(url.scheme().to_owned()));
        }
        let host = url.host().ok_or(UrlError::MissingHost)?.to_owned();
        if matches!(&host, Host::Domain(name) if name.is_empty()) {
            return Err(UrlError::MissingHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        if url.fragment().is_some() {
            return Err(UrlError::Fragment);
        }
        // Normalisation percent-encodes, so a URL can grow past the limit it passed as text. It
        // also gives a URL without a path the root path `/`, which is not counted: a URL at the
        // limit is not refused for what normalisation added to it.
        let root = usize::from(url.path() == "/");
        if url.as_str().len() - root > WEBHOOK_URL_MAX_LEN {
            return Err(UrlError::TooLong {
                len: url.as_str().len(),
            });
        }
        Ok(Self { url, host })
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({:?})", self.url.as_str())
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

impl std::str::FromStr for WebhookUrl {
    type Err = UrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl AsRef<str> for WebhookUrl {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Serialize for WebhookUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn check(text: &str, expect: Result<&str, &str>) {
        let got = WebhookUrl::parse(text)
            .map(|url| url.to_string())
            .map_err(|err| err.to_string());
        assert_eq!(
            got.as_deref().map_err(String::as_str),
            expect,
            "input: {text}"
        );
    }

    #[test]
    fn accepted_and_normalised() {
        check("https://example.com/hook", Ok("https://example.com/hook"));
        check(
            "http://Example.COM:8080/a?b=c",
            Ok("http://example.com:8080/a?b=c"),
        );
        check("https://example.com:443/x", Ok("https://example.com/x"));
        check("https://example.com", Ok("https://example.com/"));
        check(
            "https://bücher.example/",
            Ok("https://xn--bcher-kva.example/"),
        );
        check("http://[::1]:9000/", Ok("http://[::1]:9000/"));
        check("https://example.com/a b", Ok("https://example.com/a%20b"));
        // Normalisation adds the root path to a URL at the limit without one.
        let at_limit = format!("https://{}.example", "a".repeat(2048 - 16));
        assert_eq!(at_limit.len(), 2048);
        assert_eq!(WebhookUrl::parse(&at_limit).unwrap().as_str().len(), 2049);
    }

    #[test]
    fn rejected() {
        check(
            "ftp://example.com/",
            Err("URL scheme must be http or https, found `ftp`"),
        );
        check(
            "file:///etc/passwd",
            Err("URL scheme must be http or https, found `file`"),
        );
        check(
            "example.com/hook",
            Err("not a valid absolute URL: relative URL without a base"),
        );
        check("https://", Err("not a valid absolute URL: empty host"));
        check(
            "https://user:pw@example.com/",
            Err("URL must not contain a user name or password; use the signature to authenticate"),
        );
        check(
            "https://user@example.com/",
            Err("URL must not contain a user name or password; use the signature to authenticate"),
        );
        check(
            "https://example.com/#top",
            Err("URL must not contain a fragment (`#…`); it is never sent to the server"),
        );
        check(
            "http://example.com:99999/",
            Err("not a valid absolute URL: invalid port number"),
        );
        let long = format!("https://example.com/{}", "a".repeat(2048));
        check(
            &long,
            Err("URL must be at most 2048 characters, found 2068"),
        );
        // 1000 quotes pass as text but become 3000 characters of `%22`.
        let grows = format!("https://example.com/{}", "\"".repeat(1000));
        check(
            &grows,
            Err("URL must be at most 2048 characters, found 3020"),
        );
    }

    #[test]
    fn odd_ipv4_spellings_become_addresses() {
        let loopback: Host<&str> = Host::Ipv4(Ipv4Addr::LOCALHOST);
        for text in [
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://127.1/",
            "https://127.0.0.1./",
        ] {
            let url = WebhookUrl::parse(text).unwrap();
            assert_eq!(url.host(), loopback, "{text}");
        }
        let url = WebhookUrl::parse("http://[::ffff:7f00:1]/").unwrap();
        assert_eq!(
            url.host(),
            Host::<&str>::Ipv6(Ipv4Addr::LOCALHOST.to_ipv6_mapped())
        );
        assert_eq!(url.to_string(), "http://[::ffff:7f00:1]/");
        let url = WebhookUrl::parse("http://[0:0::1]/").unwrap();
        assert_eq!(url.host(), Host::<&str>::Ipv6(Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn accessors() {
        let url = WebhookUrl::parse("https://hooks.example.com/in").unwrap();
        assert!(url.is_https());
        assert_eq!(url.port_or_default(), 443);
        assert_eq!(url.host(), Host::Domain("hooks.example.com"));
        let url = WebhookUrl::parse("http://hooks.example.com:8080/in").unwrap();
        assert!(!url.is_https());
        assert_eq!(url.port_or_default(), 8080);
        assert_eq!(
            WebhookUrl::parse("http://x/").unwrap().port_or_default(),
            80
        );
    }

    #[test]
    fn serde_as_validated_string() {
        let url = WebhookUrl::parse("https://example.com/hook").unwrap();
        let json = serde_json::to_string(&url).unwrap();
        assert_eq!(json, r#""https://example.com/hook""#);
        assert_eq!(serde_json::from_str::<WebhookUrl>(&json).unwrap(), url);
        assert!(serde_json::from_str::<WebhookUrl>(r#""ftp://example.com/""#).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC{0,80}") {
            let _ = WebhookUrl::parse(&text);
        }

        #[test]
        fn normalised_form_is_stable(
            https: bool,
            host in "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
            port in proptest::option::of(1u16..),
            path in "(/[A-Za-z0-9._~%!$&'()*+,;=:@-]{0,10}){0,4}",
        ) {
            // An `xn--` label is punycode, and most strings are not.
            prop_assume!(!host.split('.').any(|label| label.starts_with("xn--")));
            let scheme = if https { "https" } else { "http" };
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let url = WebhookUrl::parse(&format!("{scheme}://{host}{port}{path}")).unwrap();
            let again = WebhookUrl::parse(url.as_str()).unwrap();
            prop_assert_eq!(&again, &url);
            prop_assert_eq!(url.host(), Host::Domain(host.as_str()));
        }
    }
}
