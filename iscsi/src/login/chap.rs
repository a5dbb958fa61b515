//! CHAP authentication (RFC 1994 with RFC 7143 §12.1.3's keys CHAP_A,
//! CHAP_I, CHAP_C, CHAP_N, CHAP_R).
//!
//! Only algorithm 5 (MD5) is implemented: it is the one every initiator
//! offers and the only one RFC 7143 requires.

use md5::{Digest, Md5};

/// CHAP_A value for MD5.
pub const CHAP_MD5: u32 = 5;

/// The CHAP response: MD5 over identifier, secret and challenge
/// (RFC 1994 §4.1).
pub fn response(identifier: u8, secret: &[u8], challenge: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update([identifier]);
    h.update(secret);
    h.update(challenge);
    h.finalize().into()
}

/// Encodes binary as RFC 7143 §6.1 hex ("0x" prefix).
pub fn encode_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Decodes an RFC 7143 §6.1 binary value: `0x`/`0X` hex or `0b`/`0B`
/// base64. `None` if malformed or longer than 1024 bytes (CHAP values are
/// tiny; a long one is hostile).
pub fn decode_binary(s: &str) -> Option<Vec<u8>> {
    let (prefix, body) = (s.get(..2)?, s.get(2..)?);
    if body.len() > 2048 {
        return None;
    }
    match prefix {
        "0x" | "0X" => {
            // An odd number of digits has an implied leading zero.
            let padded;
            let body = if body.len() % 2 == 1 {
                padded = format!("0{body}");
                padded.as_str()
            } else {
                body
            };
            (0..body.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(body.get(i..i + 2)?, 16).ok())
                .collect()
        }
        "0b" | "0B" => decode_base64(body),
        _ => None,
    }
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// A fresh challenge: 16 bytes from the OS's random source.
///
/// RFC 7143 §12.1.3: challenges must be unpredictable, and the target must
/// not reuse them, which a 128-bit random value satisfies.
pub fn new_challenge() -> std::io::Result<[u8; 16]> {
    use std::io::Read;
    let mut c = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut c)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1994_md5_response() {
        // MD5(0x01 || "secret" || 16 x 0xaa), computed independently with
        // `printf '\x01secret' ; printf '\xaa%.0s' {1..16}` | md5sum.
        let r = response(1, b"secret", &[0xaa; 16]);
        assert_eq!(encode_hex(&r), "0xff7d4622a5e64f5f5874b1c5b5f43422");
        assert_ne!(r, response(2, b"secret", &[0xaa; 16]));
    }

    #[test]
    fn binary_values() {
        assert_eq!(decode_binary("0x0a0B"), Some(vec![0x0a, 0x0b]));
        assert_eq!(decode_binary("0xabc"), Some(vec![0x0a, 0xbc]));
        assert_eq!(decode_binary("0bAQID"), Some(vec![1, 2, 3]));
        assert_eq!(decode_binary("0xzz"), None);
        assert_eq!(decode_binary("12"), None);
        assert_eq!(decode_binary("0"), None);
        let e = encode_hex(&[0, 255]);
        assert_eq!(decode_binary(&e), Some(vec![0, 255]));
    }
}
