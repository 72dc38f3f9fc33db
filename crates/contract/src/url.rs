//! The CA server's base URL, as `--server` gives it: `https://host[:port][/prefix]`.
//! Plain HTTP, user names and passwords, queries and fragments are refused, and so is a
//! host that is neither a DNS name nor an IP address — when the URL is read, not at the
//! first connection.

use std::fmt;

use rustls::pki_types::ServerName;

/// A `--server` value that is not a usable server URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --server `{url}`: {reason}")]
pub struct UrlError {
    pub url: String,
    pub reason: String,
}

/// The server's base URL (`--server`): `https://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    text: String,
    authority: String,
    host: String,
    port: u16,
    prefix: String,
    name: ServerName<'static>,
}

impl ServerUrl {
    /// Parses an `https://` URL; plain HTTP, user info, queries and fragments are refused.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let bad = |reason: &str| UrlError {
            url: url.into(),
            reason: reason.into(),
        };
        let uri: http::Uri = url
            .trim()
            .parse()
            .map_err(|_| bad("it is not a URL; write it like https://ca.example.com:8444"))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") => return Err(bad("the CA server speaks HTTPS only; write https://")),
            _ => {
                return Err(bad(
                    "write it with https://, like https://ca.example.com:8444",
                ))
            }
        }
        let auth = uri.authority().ok_or_else(|| bad("it names no host"))?;
        if auth.as_str().contains('@') {
            return Err(bad("user names and passwords in the URL are not supported"));
        }
        if uri.query().is_some() || url.contains('#') {
            return Err(bad("a query or fragment is not allowed in the server URL"));
        }
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("it names no host"));
        }
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| bad("its host is neither a DNS name nor an IP address"))?;
        let port = auth.port_u16().unwrap_or(443);
        let prefix = uri.path().trim_end_matches('/').to_string();
        let text = format!("https://{}{}", auth.as_str(), prefix);
        Ok(ServerUrl {
            text,
            authority: auth.as_str().to_string(),
            host: host.to_string(),
            port,
            prefix,
            name,
        })
    }

    /// The URL as it is shown: `https://host[:port][/prefix]`, no trailing slash.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host, without IPv6 brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (443 unless the URL names one).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host[:port]` as written: the `Host` header.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The path prefix every endpoint's path is appended to (empty, or `/…` without a
    /// trailing slash).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The name the server's certificate must hold.
    pub fn server_name(&self) -> ServerName<'static> {
        self.name.clone()
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let u = ServerUrl::parse("https://ca.example:8444").expect("url");
        assert_eq!(u.as_str(), "https://ca.example:8444");
        assert_eq!((u.host(), u.port()), ("ca.example", 8444));
        assert_eq!(u.prefix(), "");
        let u = ServerUrl::parse(" https://ca.example/mtlsgate/ ").expect("url");
        assert_eq!(u.as_str(), "https://ca.example/mtlsgate");
        assert_eq!((u.port(), u.prefix()), (443, "/mtlsgate"));
        let u = ServerUrl::parse("https://[::1]:8444").expect("url");
        assert_eq!((u.host(), u.authority()), ("::1", "[::1]:8444"));
        assert!(matches!(u.server_name(), ServerName::IpAddress(_)));
        for bad in [
            "http://ca.example",
            "ca.example:8444",
            "https://user:pw@ca.example",
            "https://ca.example/?x=1",
            "https://ca.example/#top",
            "https://ca example",
            "",
        ] {
            let e = ServerUrl::parse(bad).expect_err(bad);
            assert!(e.to_string().starts_with("invalid --server `"), "{e}");
        }
    }
}
