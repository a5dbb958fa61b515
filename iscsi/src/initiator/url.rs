//! `iscsi://` URLs in libiscsi's syntax, parsed in one place for every CLI
//! (`scuzz replay --to`, `scuzz fuzz --to`, the benchmarks):
//!
//! `iscsi://[<user>[%<secret>]@]<host>[:<port>]/<target-iqn>/<lun>`
//!
//! The host may be a bracketed IPv6 literal; the port defaults to 3260 (the
//! IANA iSCSI port, RFC 7143 §13.1).

use super::Chap;
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// The well-known iSCSI port.
pub const DEFAULT_PORT: u16 = 3260;

/// A parsed `iscsi://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct IscsiUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The target's iSCSI name.
    pub target_iqn: String,
    /// Flat LUN number.
    pub lun: u16,
    /// CHAP credentials from the user-info part, if any.
    pub chap: Option<Chap>,
}

/// A malformed URL, naming the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "bad iSCSI URL `{url}`: {reason} (expected iscsi://[user%secret@]host[:port]/target-iqn/lun)"
)]
pub struct UrlError {
    /// The URL as given, with any secret masked.
    pub url: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl IscsiUrl {
    /// `host:port` for `TcpStream::connect` (IPv6 bracketed).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn mask(url: &str) -> String {
    // Hide a secret between '%' and '@' in the authority.
    if let Some(rest) = url.strip_prefix("iscsi://") {
        let auth_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            if let Some(pct) = rest[..at].find('%') {
                return format!("iscsi://{}%***{}", &rest[..pct], &rest[at..]);
            }
        }
    }
    url.to_string()
}

impl FromStr for IscsiUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<IscsiUrl, UrlError> {
        let err = |reason| UrlError {
            url: mask(s),
            reason,
        };
        let rest = s
            .strip_prefix("iscsi://")
            .ok_or_else(|| err("scheme is not iscsi://"))?;
        let slash = rest
            .find('/')
            .ok_or_else(|| err("no /target-iqn/lun path"))?;
        let (authority, path) = (&rest[..slash], &rest[slash + 1..]);
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let chap = match userinfo {
            None => None,
            Some(u) => {
                let (user, secret) = u
                    .split_once('%')
                    .ok_or_else(|| err("user-info needs user%secret"))?;
                if user.is_empty() {
                    return Err(err("empty CHAP user"));
                }
                Some(Chap {
                    user: user.to_string(),
                    secret: secret.as_bytes().to_vec(),
                })
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let close = v6.find(']').ok_or_else(|| err("unclosed [ in IPv6 host"))?;
            let host = &v6[..close];
            let after = &v6[close + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(err("junk after ]")),
            };
            (host, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(err("empty host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| err("port is not a number in 1..=65535"))?,
        };
        let (iqn, lun) = path
            .rsplit_once('/')
            .ok_or_else(|| err("no /lun after the target name"))?;
        if iqn.is_empty() {
            return Err(err("empty target name"));
        }
        if iqn.contains('/') {
            return Err(err("target name contains '/'"));
        }
        let lun = lun
            .parse::<u16>()
            .ok()
            .filter(|&l| l < 16384)
            .ok_or_else(|| err("LUN is not a number in 0..=16383"))?;
        Ok(IscsiUrl {
            host: host.to_string(),
            port,
            target_iqn: iqn.to_string(),
            lun,
            chap,
        })
    }
}

impl fmt::Display for IscsiUrl {
    /// The URL with any secret masked, safe for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "iscsi://")?;
        if let Some(c) = &self.chap {
            write!(f, "{}%***@", c.user)?;
        }
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{}:{}/{}/{}", host, self.port, self.target_iqn, self.lun)
    }
}

impl fmt::Debug for IscsiUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `url` without the CHAP credentials of its user-info part, for messages
/// and reports (left as it is when it is not an `iscsi://` URL).
pub fn redact_url(url: &str) -> String {
    let Some(rest) = url.strip_prefix("iscsi://") else {
        return url.to_string();
    };
    let auth_end = rest.find('/').unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => format!("iscsi://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libiscsi_forms() {
        let u: IscsiUrl = "iscsi://127.0.0.1:3261/iqn.2026-11.dev.scuzz:disk/1"
            .parse()
            .unwrap();
        assert_eq!(u.addr(), "127.0.0.1:3261");
        assert_eq!(u.target_iqn, "iqn.2026-11.dev.scuzz:disk");
        assert_eq!(u.lun, 1);
        assert!(u.chap.is_none());

        let u: IscsiUrl = "iscsi://alice%s3cr3t@host/iqn.x:y/0".parse().unwrap();
        assert_eq!(u.port, DEFAULT_PORT);
        let c = u.chap.clone().unwrap();
        assert_eq!(
            (c.user.as_str(), c.secret.as_slice()),
            ("alice", &b"s3cr3t"[..])
        );
        assert_eq!(u.to_string(), "iscsi://alice%***@host:3260/iqn.x:y/0");

        let u: IscsiUrl = "iscsi://[::1]:3300/iqn.x/7".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.addr()),
            ("::1", 3300, "[::1]:3300".to_string())
        );
    }

    #[test]
    fn errors_name_the_part_and_hide_the_secret() {
        let bad = |s: &str| s.parse::<IscsiUrl>().unwrap_err();
        assert_eq!(bad("http://h/iqn/1").reason, "scheme is not iscsi://");
        assert_eq!(
            bad("iscsi://h:99999/iqn/1").reason,
            "port is not a number in 1..=65535"
        );
        assert_eq!(
            bad("iscsi://h/iqn/x").reason,
            "LUN is not a number in 0..=16383"
        );
        assert_eq!(bad("iscsi://h/iqn").reason, "no /lun after the target name");
        assert_eq!(bad("iscsi://h").reason, "no /target-iqn/lun path");
        assert_eq!(
            bad("iscsi://u@h/iqn/1").reason,
            "user-info needs user%secret"
        );
        let e = bad("iscsi://u%topsecret@h:0/iqn/1");
        assert!(!e.to_string().contains("topsecret"), "{e}");
    }

    #[test]
    fn redacted_urls_lose_their_credentials_only() {
        assert_eq!(
            redact_url("iscsi://u%s3cret@h:3260/iqn.x/1"),
            "iscsi://h:3260/iqn.x/1"
        );
        assert_eq!(redact_url("iscsi://h/iqn.x/1"), "iscsi://h/iqn.x/1");
        assert_eq!(redact_url("emulator"), "emulator");
    }
}
