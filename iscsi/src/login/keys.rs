//! Operational text keys (RFC 7143 §13) and their negotiation.
//!
//! Each key has a result function: boolean OR or AND, numeric minimum or
//! maximum within a range, a list where the responder picks the first
//! value it supports, or a declaration that is not negotiated at all
//! (MaxRecvDataSegmentLength: each side states what it can receive). The
//! same table drives the target's answers ([`Negotiated::answer`]) and an
//! initiator's reading of them ([`Negotiated::accept`]), so both sides
//! compute identical session parameters.

use crate::text::TextKeys;

/// Session-wide operational parameters (RFC 7143 §13), with the RFC's
/// defaults from [`Default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationalParams {
    /// HeaderDigest=CRC32C.
    pub header_digest: bool,
    /// DataDigest=CRC32C.
    pub data_digest: bool,
    /// MaxConnections.
    pub max_connections: u16,
    /// InitialR2T: no unsolicited Data-Out PDUs.
    pub initial_r2t: bool,
    /// ImmediateData: data may ride in the SCSI Command PDU.
    pub immediate_data: bool,
    /// MaxBurstLength: largest solicited (or Data-In) sequence.
    pub max_burst_length: u32,
    /// FirstBurstLength: largest unsolicited data (immediate included).
    pub first_burst_length: u32,
    /// DefaultTime2Wait, seconds.
    pub default_time2wait: u16,
    /// DefaultTime2Retain, seconds.
    pub default_time2retain: u16,
    /// MaxOutstandingR2T per task.
    pub max_outstanding_r2t: u16,
    /// DataPDUInOrder.
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder.
    pub data_sequence_in_order: bool,
    /// ErrorRecoveryLevel (Scuzz supports 0).
    pub error_recovery_level: u8,
}

impl Default for OperationalParams {
    fn default() -> Self {
        OperationalParams {
            header_digest: false,
            data_digest: false,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }
}

/// How a key's result is computed (RFC 7143 §6.2).
#[derive(Debug, Clone, Copy)]
enum Rule {
    Or,
    And,
    Min(u32, u32),
    Max(u32, u32),
    Digest,
}

/// Every negotiated operational key with its rule.
const KEYS: &[(&str, Rule)] = &[
    ("HeaderDigest", Rule::Digest),
    ("DataDigest", Rule::Digest),
    ("MaxConnections", Rule::Min(1, 65535)),
    ("InitialR2T", Rule::Or),
    ("ImmediateData", Rule::And),
    ("MaxBurstLength", Rule::Min(512, 16_777_215)),
    ("FirstBurstLength", Rule::Min(512, 16_777_215)),
    ("DefaultTime2Wait", Rule::Max(0, 3600)),
    ("DefaultTime2Retain", Rule::Min(0, 3600)),
    ("MaxOutstandingR2T", Rule::Min(1, 65535)),
    ("DataPDUInOrder", Rule::Or),
    ("DataSequenceInOrder", Rule::Or),
    ("ErrorRecoveryLevel", Rule::Min(0, 2)),
];

/// Keys that are declarations, never answered with a negotiated value.
const DECLARATIVE: &[&str] = &[
    "InitiatorName",
    "InitiatorAlias",
    "TargetName",
    "TargetAlias",
    "TargetAddress",
    "TargetPortalGroupTag",
    "SessionType",
    "AuthMethod",
    "CHAP_A",
    "CHAP_I",
    "CHAP_C",
    "CHAP_N",
    "CHAP_R",
    "SendTargets",
];

/// Range of MaxRecvDataSegmentLength (RFC 7143 §13.12).
pub const MAX_RECV_DATA_SEGMENT_RANGE: (u32, u32) = (512, 16_777_215);

/// The outcome of negotiation so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Session parameters in force.
    pub params: OperationalParams,
    /// What the initiator declared it can receive: the target's Data-In,
    /// Text and Login data segments must not exceed it.
    pub initiator_max_recv: u32,
    /// What the target declared it can receive.
    pub target_max_recv: u32,
}

impl Default for Negotiated {
    fn default() -> Self {
        Negotiated {
            params: OperationalParams::default(),
            initiator_max_recv: crate::codec::DEFAULT_MAX_RECV_DATA_SEGMENT,
            target_max_recv: crate::codec::DEFAULT_MAX_RECV_DATA_SEGMENT,
        }
    }
}

fn bool_value(v: &str) -> Option<bool> {
    match v {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "Yes"
    } else {
        "No"
    }
}

/// RFC 7143 §6.1: numbers are decimal, or hex with 0x.
fn number(v: &str) -> Option<u32> {
    if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u32::from_str_radix(h, 16).ok()
    } else {
        v.parse().ok()
    }
}

fn get_param(p: &OperationalParams, key: &str) -> u32 {
    match key {
        "HeaderDigest" => u32::from(p.header_digest),
        "DataDigest" => u32::from(p.data_digest),
        "MaxConnections" => u32::from(p.max_connections),
        "InitialR2T" => u32::from(p.initial_r2t),
        "ImmediateData" => u32::from(p.immediate_data),
        "MaxBurstLength" => p.max_burst_length,
        "FirstBurstLength" => p.first_burst_length,
        "DefaultTime2Wait" => u32::from(p.default_time2wait),
        "DefaultTime2Retain" => u32::from(p.default_time2retain),
        "MaxOutstandingR2T" => u32::from(p.max_outstanding_r2t),
        "DataPDUInOrder" => u32::from(p.data_pdu_in_order),
        "DataSequenceInOrder" => u32::from(p.data_sequence_in_order),
        "ErrorRecoveryLevel" => u32::from(p.error_recovery_level),
        _ => 0,
    }
}

fn set_param(p: &mut OperationalParams, key: &str, v: u32) {
    // Values reaching here are range-checked against KEYS, so the narrowing
    // casts cannot lose bits.
    match key {
        "HeaderDigest" => p.header_digest = v != 0,
        "DataDigest" => p.data_digest = v != 0,
        "MaxConnections" => p.max_connections = v as u16,
        "InitialR2T" => p.initial_r2t = v != 0,
        "ImmediateData" => p.immediate_data = v != 0,
        "MaxBurstLength" => p.max_burst_length = v,
        "FirstBurstLength" => p.first_burst_length = v,
        "DefaultTime2Wait" => p.default_time2wait = v as u16,
        "DefaultTime2Retain" => p.default_time2retain = v as u16,
        "MaxOutstandingR2T" => p.max_outstanding_r2t = v as u16,
        "DataPDUInOrder" => p.data_pdu_in_order = v != 0,
        "DataSequenceInOrder" => p.data_sequence_in_order = v != 0,
        "ErrorRecoveryLevel" => p.error_recovery_level = v as u8,
        _ => {}
    }
}

/// Why an answer could not be accepted by an initiator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target answered {key}={value}, which the offer does not allow")]
pub struct NegotiationError {
    /// The key.
    pub key: String,
    /// The answer.
    pub value: String,
}

impl Negotiated {
    /// Target side: answers the operational keys in `offer`, given the
    /// target's own limits and preferences `ours` and the target's
    /// MaxRecvDataSegmentLength, updating the negotiated state.
    ///
    /// Keys the target does not know are answered `NotUnderstood`, values
    /// outside a key's range `Reject` (RFC 7143 §6.2). Declarative login
    /// keys (names, SessionType, CHAP) are left for the caller.
    pub fn answer(&mut self, offer: &TextKeys, ours: &OperationalParams) -> TextKeys {
        let mut out = TextKeys::new();
        for (key, value) in &offer.0 {
            if key == "MaxRecvDataSegmentLength" {
                match number(value) {
                    Some(v)
                        if (MAX_RECV_DATA_SEGMENT_RANGE.0..=MAX_RECV_DATA_SEGMENT_RANGE.1)
                            .contains(&v) =>
                    {
                        self.initiator_max_recv = v;
                    }
                    _ => out.push(key.clone(), "Reject"),
                }
                continue;
            }
            if DECLARATIVE.contains(&key.as_str()) || key.starts_with("X-") {
                if key.starts_with("X-") {
                    out.push(key.clone(), "NotUnderstood");
                }
                continue;
            }
            let Some(&(_, rule)) = KEYS.iter().find(|(k, _)| k == key) else {
                out.push(key.clone(), "NotUnderstood");
                continue;
            };
            let mine = get_param(ours, key);
            let result = match rule {
                Rule::Or => bool_value(value).map(|v| (v || mine != 0) as u32),
                Rule::And => bool_value(value).map(|v| (v && mine != 0) as u32),
                Rule::Min(lo, hi) => number(value)
                    .filter(|v| (lo..=hi).contains(v))
                    .map(|v| v.min(mine)),
                Rule::Max(lo, hi) => number(value)
                    .filter(|v| (lo..=hi).contains(v))
                    .map(|v| v.max(mine)),
                // The initiator lists in order of preference; take the first
                // we support. "CRC32C" is only honoured if we allow digests.
                Rule::Digest => value.split(',').find_map(|v| match v {
                    "None" => Some(0),
                    "CRC32C" if mine != 0 => Some(1),
                    _ => None,
                }),
            };
            match result {
                Some(v) => {
                    set_param(&mut self.params, key, v);
                    let text = match rule {
                        Rule::Or | Rule::And => yes_no(v != 0).to_string(),
                        Rule::Digest => if v != 0 { "CRC32C" } else { "None" }.to_string(),
                        _ => v.to_string(),
                    };
                    out.push(key.clone(), text);
                }
                None => out.push(key.clone(), "Reject"),
            }
        }
        self.fix_bursts();
        out
    }

    /// RFC 7143 §13.14: FirstBurstLength must not exceed MaxBurstLength.
    fn fix_bursts(&mut self) {
        if self.params.first_burst_length > self.params.max_burst_length {
            self.params.first_burst_length = self.params.max_burst_length;
        }
    }

    /// Initiator side: the keys to offer for `wanted` parameters and this
    /// initiator's MaxRecvDataSegmentLength.
    pub fn offer(wanted: &OperationalParams, max_recv: u32) -> TextKeys {
        let mut out = TextKeys::new();
        for &(key, rule) in KEYS {
            let v = get_param(wanted, key);
            let text = match rule {
                Rule::Or | Rule::And => yes_no(v != 0).to_string(),
                Rule::Digest => if v != 0 { "CRC32C,None" } else { "None" }.to_string(),
                _ => v.to_string(),
            };
            out.push(key, text);
        }
        out.push("MaxRecvDataSegmentLength", max_recv.to_string());
        out
    }

    /// Initiator side: applies the target's answers to an [`Negotiated::offer`]
    /// of `wanted`. An answer outside what the rule allows is an error (the
    /// initiator must then fail the login, RFC 7143 §6.2.1).
    pub fn accept(
        &mut self,
        answers: &TextKeys,
        wanted: &OperationalParams,
    ) -> Result<(), NegotiationError> {
        for (key, value) in &answers.0 {
            let bad = || NegotiationError {
                key: key.clone(),
                value: value.clone(),
            };
            if key == "MaxRecvDataSegmentLength" {
                let v = number(value)
                    .filter(|v| {
                        (MAX_RECV_DATA_SEGMENT_RANGE.0..=MAX_RECV_DATA_SEGMENT_RANGE.1).contains(v)
                    })
                    .ok_or_else(bad)?;
                self.target_max_recv = v;
                continue;
            }
            let Some(&(_, rule)) = KEYS.iter().find(|(k, _)| k == key) else {
                continue;
            };
            if value == "Reject" || value == "NotUnderstood" || value == "Irrelevant" {
                continue;
            }
            let mine = get_param(wanted, key);
            let v = match rule {
                Rule::Or => bool_value(value).filter(|&v| v || mine == 0).map(u32::from),
                Rule::And => bool_value(value)
                    .filter(|&v| !v || mine != 0)
                    .map(u32::from),
                Rule::Min(lo, hi) => number(value).filter(|&v| (lo..=hi).contains(&v) && v <= mine),
                Rule::Max(lo, hi) => number(value).filter(|&v| (lo..=hi).contains(&v) && v >= mine),
                Rule::Digest => match value.as_str() {
                    "None" => Some(0),
                    "CRC32C" if mine != 0 => Some(1),
                    _ => None,
                },
            }
            .ok_or_else(bad)?;
            set_param(&mut self.params, key, v);
        }
        self.fix_bursts();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(pairs: &[(&str, &str)]) -> TextKeys {
        TextKeys(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn target_answers_by_rule() {
        let ours = OperationalParams {
            max_burst_length: 1 << 20,
            immediate_data: true,
            initial_r2t: false,
            header_digest: true,
            first_burst_length: 1 << 20,
            ..Default::default()
        };
        let mut n = Negotiated::default();
        let a = n.answer(
            &keys(&[
                ("HeaderDigest", "CRC32C,None"),
                ("DataDigest", "CRC32C,None"),
                ("InitialR2T", "No"),
                ("ImmediateData", "Yes"),
                ("MaxBurstLength", "16776192"),
                ("FirstBurstLength", "262144"),
                ("DefaultTime2Wait", "0"),
                ("MaxRecvDataSegmentLength", "262144"),
                ("ErrorRecoveryLevel", "2"),
                ("X-com.example.Foo", "1"),
                ("Bogus", "1"),
                ("MaxOutstandingR2T", "0"),
            ]),
            &ours,
        );
        assert_eq!(a.get("HeaderDigest"), Some("CRC32C"));
        assert_eq!(a.get("DataDigest"), Some("None"));
        assert_eq!(a.get("InitialR2T"), Some("No"));
        assert_eq!(a.get("MaxBurstLength"), Some("1048576"));
        assert_eq!(a.get("DefaultTime2Wait"), Some("2"));
        assert_eq!(a.get("ErrorRecoveryLevel"), Some("0"));
        assert_eq!(a.get("X-com.example.Foo"), Some("NotUnderstood"));
        assert_eq!(a.get("Bogus"), Some("NotUnderstood"));
        assert_eq!(a.get("MaxOutstandingR2T"), Some("Reject"));
        assert_eq!(n.initiator_max_recv, 262144);
        assert!(n.params.header_digest && !n.params.data_digest);
        assert_eq!(n.params.first_burst_length, 262144);
    }

    #[test]
    fn initiator_and_target_agree() {
        let wanted = OperationalParams {
            initial_r2t: false,
            max_burst_length: (1 << 24) - 1,
            first_burst_length: 1 << 20,
            max_outstanding_r2t: 8,
            ..Default::default()
        };
        let ours = OperationalParams {
            max_burst_length: 256 * 1024,
            max_outstanding_r2t: 4,
            first_burst_length: 1 << 20,
            ..Default::default()
        };
        let mut t = Negotiated::default();
        let answers = t.answer(&Negotiated::offer(&wanted, 65536), &ours);
        let mut i = Negotiated::default();
        i.accept(&answers, &wanted).unwrap();
        assert_eq!(i.params, t.params);
        assert_eq!(
            t.params.first_burst_length,
            256 * 1024,
            "clamped to MaxBurstLength"
        );
        assert!(t.params.initial_r2t, "OR with the target's Yes");
    }

    #[test]
    fn initiator_rejects_answers_beyond_its_offer() {
        let mut i = Negotiated::default();
        let wanted = OperationalParams::default();
        assert!(i
            .accept(&keys(&[("MaxBurstLength", "999999999")]), &wanted)
            .is_err());
        assert!(i
            .accept(&keys(&[("HeaderDigest", "CRC32C")]), &wanted)
            .is_err());
    }
}
