//! Device and Endpoint addresses: `scheme://host:port[/path][?query]`, as `Device.url` and
//! `Endpoint.address` carry them.

/// An address that is not `scheme://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// No `://`.
    #[error("not a URL: {0}")]
    NotAUrl(String),
    /// No port, or an empty host.
    #[error("{0}: expected host:port")]
    NoHostPort(String),
}

/// The parts of an address the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceUrl {
    /// The scheme (`mllp`, `astm`, `tcp`, `dicom`).
    pub(crate) scheme: String,
    /// `host:port`.
    pub(crate) addr: String,
    /// Query parameters, percent-decoded.
    pub(crate) query: Vec<(String, String)>,
}

impl DeviceUrl {
    pub(crate) fn parse(url: &str) -> Result<DeviceUrl, UrlError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| UrlError::NotAUrl(url.to_owned()))?;
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.split('/').next().unwrap_or(authority);
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            return Err(UrlError::NoHostPort(url.to_owned()));
        }
        Ok(DeviceUrl {
            scheme: scheme.to_owned(),
            addr: authority.to_owned(),
            query: form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        })
    }

    /// The value of query parameter `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The port (the part after the last `:`).
    pub(crate) fn port(&self) -> &str {
        self.addr.rsplit(':').next().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u =
            DeviceUrl::parse("mllp://10.0.0.5:2575?encoding=windows-1252&returnAck=application")
                .unwrap();
        assert_eq!(u.scheme, "mllp");
        assert_eq!(u.addr, "10.0.0.5:2575");
        assert_eq!(u.port(), "2575");
        assert_eq!(u.get("encoding"), Some("windows-1252"));
        assert_eq!(u.get("returnAck"), Some("application"));
        assert_eq!(
            DeviceUrl::parse("mllp://[::1]:2575").unwrap().addr,
            "[::1]:2575"
        );
        assert!(DeviceUrl::parse("mllp://host").is_err());
        assert!(DeviceUrl::parse("host:1").is_err());
        assert_eq!(
            DeviceUrl::parse("tcp://0.0.0.0:9?startChar=%02")
                .unwrap()
                .get("startChar"),
            Some("\u{2}")
        );
    }
}
