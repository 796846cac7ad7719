//! Which API token a client command sends: one fact shared by the host
//! (which leaves a token for its port, see [`local_token_path`]) and both
//! halves of the CLI (which look for it there, see [`discover_token`]).

use std::path::{Path, PathBuf};

/// Where a host on loopback leaves an admin token for the CLI of the same
/// user on the same machine, keyed by its REST port:
/// `${XDG_CONFIG_HOME:-~/.config}/hodei/tokens/PORT` (0600). `None` when
/// neither variable is set.
pub fn local_token_path(port: u16) -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some(config.join("hodei").join("tokens").join(port.to_string()))
}

/// The API token the CLI sends: `explicit` (`--token`,
/// `HODEI_API_TOKEN`), else the one a host on this machine left for its
/// port (see [`local_token_path`]) when `base` is on loopback, else
/// `./hodei-data/admin.token` (a host started here with the default data
/// dir). None: requests go without one.
pub fn discover_token(base: &str, explicit: Option<&str>) -> Option<String> {
    if let Some(token) = explicit.map(str::trim).filter(|t| !t.is_empty()) {
        return Some(token.to_owned());
    }
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    };
    if let Some(port) = loopback_port(base)
        && let Some(token) = local_token_path(port).and_then(|p| read(&p))
    {
        return Some(token);
    }
    read(Path::new("hodei-data/admin.token"))
}

/// The port of `base` when its host is this machine (`localhost`, a
/// loopback address); the scheme's default port when it names none.
fn loopback_port(base: &str) -> Option<u16> {
    let uri: ureq::http::Uri = base.parse().ok()?;
    let host = uri.host()?;
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return None;
    }
    uri.port_u16().or(match uri.scheme_str()? {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::loopback_port;

    #[test]
    fn loopback_ports_are_found_and_other_hosts_are_not() {
        assert_eq!(loopback_port("http://127.0.0.1:8080"), Some(8080));
        assert_eq!(loopback_port("http://localhost/"), Some(80));
        assert_eq!(loopback_port("https://[::1]:9443"), Some(9443));
        assert_eq!(loopback_port("https://127.0.0.2"), Some(443));
        assert_eq!(loopback_port("http://10.0.0.1:8080"), None);
        assert_eq!(loopback_port("http://example.com:8080"), None);
        assert_eq!(loopback_port("not a url"), None);
    }
}
