//! Text keys: the `key=value\0` data segment of Login and Text PDUs
//! (RFC 7143 §6.1), and the reassembly of text that spans PDUs (C bit).

use crate::pdu::PduError;

/// RFC 7143 §6.1: "A key-name ... MUST NOT exceed 63 bytes".
pub const MAX_KEY_LEN: usize = 63;

/// Largest text we accept across continued PDUs: far above what any real
/// negotiation sends (SendTargets answers included), small enough that a
/// peer sending C=1 forever cannot grow our memory without bound.
pub const MAX_TEXT_LEN: usize = 64 * 1024;

/// An ordered list of `key=value` pairs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextKeys(pub Vec<(String, String)>);

impl TextKeys {
    /// An empty list.
    pub fn new() -> TextKeys {
        TextKeys(Vec::new())
    }

    /// Parses a data segment. Trailing NUL padding is tolerated; a pair
    /// without `=`, an empty or over-long key, or non-UTF-8 bytes are errors
    /// naming the offset.
    pub fn parse(data: &[u8]) -> Result<TextKeys, PduError> {
        let mut out = Vec::new();
        let mut off = 0usize;
        for item in data.split(|&b| b == 0) {
            let start = off;
            off += item.len() + 1;
            if item.is_empty() {
                continue;
            }
            let eq = item
                .iter()
                .position(|&b| b == b'=')
                .ok_or(PduError::BadText {
                    offset: start,
                    reason: "no '=' in key=value pair",
                })?;
            let (k, v) = (&item[..eq], &item[eq + 1..]);
            if k.is_empty() || k.len() > MAX_KEY_LEN {
                return Err(PduError::BadText {
                    offset: start,
                    reason: "key name empty or longer than 63 bytes",
                });
            }
            let (Ok(k), Ok(v)) = (std::str::from_utf8(k), std::str::from_utf8(v)) else {
                return Err(PduError::BadText {
                    offset: start,
                    reason: "key or value is not UTF-8",
                });
            };
            out.push((k.to_string(), v.to_string()));
        }
        Ok(TextKeys(out))
    }

    /// The value of the first occurrence of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Appends a pair.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.push((key.into(), value.into()));
    }

    /// Whether no pairs are present.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The wire form: each pair followed by a NUL.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for (k, val) in &self.0 {
            v.extend_from_slice(k.as_bytes());
            v.push(b'=');
            v.extend_from_slice(val.as_bytes());
            v.push(0);
        }
        v
    }
}

/// Collects the data segments of a Login or Text exchange whose PDUs carry
/// the C (continue) bit (RFC 7143 §11.10.2).
#[derive(Debug, Default)]
pub struct TextAssembler {
    buf: Vec<u8>,
}

impl TextAssembler {
    /// Appends one PDU's data; returns the whole text once `cont` is false.
    pub fn push(&mut self, data: &[u8], cont: bool) -> Result<Option<Vec<u8>>, PduError> {
        if self.buf.len() + data.len() > MAX_TEXT_LEN {
            self.buf.clear();
            return Err(PduError::BadText {
                offset: MAX_TEXT_LEN,
                reason: "continued text exceeds 64 KiB",
            });
        }
        self.buf.extend_from_slice(data);
        if cont {
            Ok(None)
        } else {
            Ok(Some(std::mem::take(&mut self.buf)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_encode() {
        let raw = b"InitiatorName=iqn.x\0SessionType=Normal\0\0\0";
        let k = TextKeys::parse(raw).unwrap();
        assert_eq!(k.get("SessionType"), Some("Normal"));
        assert_eq!(k.encode(), &raw[..raw.len() - 2]);
        assert_eq!(
            TextKeys::parse(b"a=b=c\0").unwrap().get("a"),
            Some("b=c"),
            "only the first '=' separates"
        );
    }

    #[test]
    fn malformed_text_names_the_offset() {
        assert_eq!(
            TextKeys::parse(b"A=1\0novalue\0"),
            Err(PduError::BadText {
                offset: 4,
                reason: "no '=' in key=value pair"
            })
        );
        let long = format!("{}=1\0", "k".repeat(64));
        assert!(TextKeys::parse(long.as_bytes()).is_err());
        assert!(TextKeys::parse(b"=1\0").is_err());
        assert!(TextKeys::parse(b"k=\xff\0").is_err());
    }

    #[test]
    fn continued_text_is_capped() {
        let mut a = TextAssembler::default();
        assert_eq!(a.push(b"Key=", true).unwrap(), None);
        assert_eq!(a.push(b"Val\0", false).unwrap().unwrap(), b"Key=Val\0");
        let chunk = vec![b'x'; 8192];
        let mut err = false;
        for _ in 0..10 {
            if a.push(&chunk, true).is_err() {
                err = true;
                break;
            }
        }
        assert!(err);
    }
}
