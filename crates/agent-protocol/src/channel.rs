//! Rules about an inbound channel's `Endpoint.address` that the relay (when the Endpoint is
//! written) and the agent (`--check`, and when the channel starts) must agree on.

/// Whether an inbound channel listens over TLS, from its scheme and query options:
/// `mllps://` always; `dicom://` when `tls=true`. A TLS channel needs `cert=FILE&key=FILE`
/// (`ca=FILE` optional, for mutual TLS); the files themselves are read by the agent.
///
/// `get` returns the value of a query option by name.
///
/// # Errors
///
/// The sentence a user needs when the options cannot work: `tls=` other than `true`/`false`,
/// `cert=`/`key=`/`ca=` on a channel without TLS, a TLS channel without `cert=` and `key=`.
pub fn listener_tls<'a>(
    scheme: &str,
    get: impl for<'k> Fn(&'k str) -> Option<&'a str>,
) -> Result<bool, String> {
    let tls = match (scheme, get("tls")) {
        ("mllps", None | Some("true")) => true,
        ("mllps", Some(other)) => {
            return Err(format!(
                "tls={other:?}: mllps:// is always TLS (remove tls=, or use mllp:// for plain MLLP)"
            ));
        }
        ("dicom", Some("true")) => true,
        ("dicom", Some(other)) if other != "false" => {
            return Err(format!("tls={other:?}: true or false"));
        }
        _ => false,
    };
    if tls {
        if get("cert").is_none() || get("key").is_none() {
            return Err(format!(
                "{scheme}:// channels over TLS need cert=FILE and key=FILE (PEM)"
            ));
        }
    } else if let Some(k) = ["cert", "key", "ca"].into_iter().find(|k| get(k).is_some()) {
        return Err(if scheme == "dicom" {
            format!("{k}= is for TLS channels: add tls=true, or remove {k}=")
        } else {
            format!("{k}= is for TLS channels ({scheme}:// has none): remove {k}=")
        });
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(scheme: &str, query: &[(&'static str, &'static str)]) -> Result<bool, String> {
        listener_tls(scheme, |k| {
            query.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
        })
    }

    #[test]
    fn tls_options_are_checked_by_scheme() {
        assert_eq!(check("mllp", &[]), Ok(false));
        assert_eq!(check("dicom", &[("tls", "false")]), Ok(false));
        assert_eq!(
            check("dicom", &[("tls", "true"), ("cert", "c"), ("key", "k")]),
            Ok(true)
        );
        assert_eq!(
            check("mllps", &[("cert", "c"), ("key", "k"), ("ca", "a")]),
            Ok(true)
        );
        assert_eq!(
            check("dicom", &[("tls", "yes"), ("cert", "c"), ("key", "k")]),
            Err("tls=\"yes\": true or false".to_owned())
        );
        assert_eq!(
            check("dicom", &[("cert", "c"), ("key", "k")]),
            Err("cert= is for TLS channels: add tls=true, or remove cert=".to_owned())
        );
        assert_eq!(
            check("mllps", &[("cert", "c")]),
            Err("mllps:// channels over TLS need cert=FILE and key=FILE (PEM)".to_owned())
        );
        assert!(check("mllp", &[("ca", "a")]).is_err());
        assert!(
            check("mllps", &[("tls", "yes"), ("cert", "c"), ("key", "k")])
                .is_err_and(|e| e.contains("mllps:// is always TLS"))
        );
        assert!(check("mllps", &[("tls", "false"), ("cert", "c"), ("key", "k")]).is_err());
        assert_eq!(
            check("mllps", &[("tls", "true"), ("cert", "c"), ("key", "k")]),
            Ok(true)
        );
    }
}
