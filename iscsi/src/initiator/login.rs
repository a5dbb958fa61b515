//! The initiator's side of the login phase (RFC 7143 §6): security
//! negotiation (AuthMethod None or CHAP), operational negotiation through
//! the shared [`crate::login::Negotiated`] rules, and the Text exchange of a
//! discovery session (SendTargets, §11.10 and Appendix C).
//!
//! Everything here runs on the bare socket before the full-feature machinery
//! takes it over, one request and one response at a time.

use super::error::InitiatorError;
use super::{Chap, LoginOptions};
use crate::codec::{read_frame, PduCodec};
use crate::login::{chap, LoginStatus, Negotiated};
use crate::pdu::{
    Digests, Header, LoginRequest, LoginResponse, LogoutRequest, Pdu, Stage, TextRequest,
    RESERVED_TAG,
};
use crate::text::{TextAssembler, TextKeys};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Login Requests and Responses one login may take before the initiator
/// gives up on a target that never transits.
const MAX_ROUNDS: usize = 16;

/// Which session the login opens (RFC 7143 §12.21, SessionType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionKind {
    Normal,
    Discovery,
}

/// A socket in the full-feature phase and what login settled.
pub(crate) struct LoggedIn {
    pub stream: TcpStream,
    /// Bytes read past the final Login Response (normally none).
    pub buf: BytesMut,
    pub negotiated: Negotiated,
    pub tsih: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    /// The MaxRecvDataSegmentLength this side declared.
    pub our_max_recv: u32,
}

/// One request/response conversation on the socket during login or a
/// discovery session's Text exchange.
struct Exchange<'a> {
    addr: &'a str,
    stream: TcpStream,
    buf: BytesMut,
    codec: PduCodec,
    isid: [u8; 6],
    tsih: u16,
    itt: u32,
    cmd_sn: u32,
    exp_stat_sn: u32,
    target: &'a str,
}

impl Exchange<'_> {
    async fn send(&mut self, pdu: &Pdu) -> Result<(), InitiatorError> {
        let mut wire = BytesMut::new();
        pdu.encode(self.codec.digests, &mut wire);
        self.stream
            .write_all(&wire)
            .await
            .map_err(|e| InitiatorError::Io {
                addr: self.addr.to_string(),
                source: e.into(),
            })
    }

    async fn recv(&mut self) -> Result<Pdu, InitiatorError> {
        let frame = read_frame(&mut self.stream, &mut self.buf, &self.codec)
            .await
            .map_err(|source| InitiatorError::Io {
                addr: self.addr.to_string(),
                source,
            })?
            .ok_or_else(|| {
                InitiatorError::Protocol("target closed the connection during login".into())
            })?;
        frame
            .parse()
            .map_err(|e| InitiatorError::Protocol(format!("undecodable PDU during login: {e}")))
    }

    fn login_request(&self, csg: Stage, nsg: Stage, transit: bool) -> LoginRequest {
        LoginRequest {
            transit,
            cont: false,
            csg,
            nsg,
            version_max: 0,
            version_min: 0,
            isid: self.isid,
            tsih: self.tsih,
            itt: self.itt,
            cid: 0,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        }
    }

    /// Sends one Login Request carrying `keys` and returns the target's
    /// whole answer, asking for continued text (C bit) as §6.3 requires.
    async fn round(
        &mut self,
        csg: Stage,
        nsg: Stage,
        transit: bool,
        keys: &TextKeys,
    ) -> Result<(LoginResponse, TextKeys), InitiatorError> {
        let req = self.login_request(csg, nsg, transit);
        self.send(&Pdu::new(Header::LoginRequest(req), keys.encode()))
            .await?;
        let mut text = TextAssembler::default();
        for _ in 0..MAX_ROUNDS {
            let pdu = self.recv().await?;
            let Header::LoginResponse(resp) = pdu.header else {
                return Err(InitiatorError::Protocol(format!(
                    "{} during login",
                    pdu.header.name()
                )));
            };
            let status = LoginStatus {
                class: resp.status_class,
                detail: resp.status_detail,
            };
            if status.class == 1 {
                // §11.13.5: redirection; the new portal is in TargetAddress.
                let address = TextKeys::parse(&pdu.data)
                    .ok()
                    .and_then(|k| k.get("TargetAddress").map(str::to_string))
                    .unwrap_or_default();
                return Err(InitiatorError::Redirected {
                    target: self.target.to_string(),
                    status,
                    address,
                });
            }
            if status != LoginStatus::SUCCESS {
                return Err(InitiatorError::LoginRejected {
                    target: self.target.to_string(),
                    status,
                });
            }
            if resp.itt != self.itt {
                return Err(InitiatorError::Protocol(format!(
                    "Login Response ITT {:#x}, request had {:#x}",
                    resp.itt, self.itt
                )));
            }
            self.tsih = resp.tsih;
            self.exp_stat_sn = resp.stat_sn.wrapping_add(1);
            let data = text
                .push(&pdu.data, resp.cont)
                .map_err(|e| InitiatorError::Protocol(format!("login text: {e}")))?;
            match data {
                Some(all) => {
                    let keys = TextKeys::parse(&all)
                        .map_err(|e| InitiatorError::Protocol(format!("login text: {e}")))?;
                    return Ok((resp, keys));
                }
                None => {
                    // §6.3: acknowledge a partial text with an empty request.
                    let req = self.login_request(csg, nsg, false);
                    self.send(&Pdu::header_only(Header::LoginRequest(req)))
                        .await?;
                }
            }
        }
        Err(InitiatorError::Protocol(
            "login text continued past 16 PDUs".into(),
        ))
    }
}

/// Answers a CHAP challenge (RFC 1994 with MD5, RFC 7143 §12.1.3).
fn chap_answer(chap: &Chap, offer: &TextKeys) -> Result<TextKeys, InitiatorError> {
    let algorithm = offer.get("CHAP_A").unwrap_or("");
    if algorithm.parse::<u32>().ok() != Some(chap::CHAP_MD5) {
        return Err(InitiatorError::Chap(format!(
            "target chose CHAP_A={algorithm}, only 5 (MD5) is offered"
        )));
    }
    let id = offer
        .get("CHAP_I")
        .and_then(|v| v.parse::<u8>().ok())
        .ok_or_else(|| InitiatorError::Chap("missing or bad CHAP_I".into()))?;
    let challenge = offer
        .get("CHAP_C")
        .and_then(chap::decode_binary)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| InitiatorError::Chap("missing or bad CHAP_C".into()))?;
    let mut out = TextKeys::new();
    out.push("CHAP_N", chap.user.clone());
    out.push(
        "CHAP_R",
        chap::encode_hex(&chap::response(id, &chap.secret, &challenge)),
    );
    Ok(out)
}

/// Cap on a SendTargets answer: a target with thousands of names still
/// fits, a peer streaming text forever does not.
const MAX_SEND_TARGETS_TEXT: usize = 4 << 20;

/// Keys a discovery session negotiates; the rest are irrelevant there
/// (RFC 7143 §12: "Irrelevant when: SessionType=Discovery").
const DISCOVERY_KEYS: &[&str] = &["HeaderDigest", "DataDigest", "MaxRecvDataSegmentLength"];

/// Connects and logs in. Returns the socket in the full-feature phase.
pub(crate) async fn login(
    addr: &str,
    opts: &LoginOptions,
    kind: SessionKind,
    isid: [u8; 6],
) -> Result<LoggedIn, InitiatorError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| InitiatorError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    // Small PDUs (a 48-byte READ command) must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let mut x = Exchange {
        addr,
        stream,
        buf: BytesMut::with_capacity(64 * 1024),
        codec: PduCodec::default(),
        isid,
        tsih: 0,
        itt: 0,
        cmd_sn: 1,
        exp_stat_sn: 0,
        target: if kind == SessionKind::Normal {
            &opts.target_iqn
        } else {
            "discovery"
        },
    };

    // Security stage (§6.3.1: the leading login carries the names).
    let mut keys = TextKeys::new();
    keys.push("InitiatorName", opts.initiator_iqn.clone());
    match kind {
        SessionKind::Normal => {
            keys.push("TargetName", opts.target_iqn.clone());
            keys.push("SessionType", "Normal");
        }
        SessionKind::Discovery => keys.push("SessionType", "Discovery"),
    }
    let sec = Stage::Security;
    let op = Stage::Operational;
    let (mut resp, answer) = match &opts.chap {
        None => {
            keys.push("AuthMethod", "None");
            x.round(sec, op, true, &keys).await?
        }
        Some(chap) => {
            keys.push("AuthMethod", "CHAP,None");
            let (resp, answer) = x.round(sec, op, false, &keys).await?;
            match answer.get("AuthMethod") {
                Some("CHAP") => {
                    let mut a = TextKeys::new();
                    a.push("CHAP_A", chap::CHAP_MD5.to_string());
                    let (_, challenge) = x.round(sec, op, false, &a).await?;
                    let response = chap_answer(chap, &challenge)?;
                    x.round(sec, op, true, &response).await?
                }
                _ => (resp, answer),
            }
        }
    };
    if answer.get("AuthMethod") == Some("CHAP") && opts.chap.is_none() {
        return Err(InitiatorError::Chap(
            "the target requires CHAP; give credentials (iscsi://user%secret@host/...)".into(),
        ));
    }
    let mut rounds = 0;
    while resp.csg == Stage::Security && !(resp.transit && resp.nsg != Stage::Security) {
        rounds += 1;
        if rounds > MAX_ROUNDS {
            return Err(InitiatorError::Protocol(
                "target never left the security stage".into(),
            ));
        }
        resp = x.round(sec, op, true, &TextKeys::new()).await?.0;
    }

    // Operational stage.
    let our_max_recv = opts.max_recv_data_segment;
    let mut negotiated = Negotiated::default();
    if !(resp.transit && resp.nsg == Stage::FullFeature) {
        let mut offer = Negotiated::offer(&opts.params, our_max_recv);
        if kind == SessionKind::Discovery {
            offer
                .0
                .retain(|(k, _)| DISCOVERY_KEYS.contains(&k.as_str()));
        }
        let mut offered: Vec<String> = offer.0.iter().map(|(k, _)| k.clone()).collect();
        let mut sent = offer;
        let mut rounds = 0;
        loop {
            let (r, answers) = x.round(op, Stage::FullFeature, true, &sent).await?;
            negotiated.accept(&answers, &opts.params)?;
            resp = r;
            if resp.transit && resp.nsg == Stage::FullFeature {
                break;
            }
            rounds += 1;
            if rounds > MAX_ROUNDS {
                return Err(InitiatorError::Protocol(
                    "target never reached the full-feature phase".into(),
                ));
            }
            // §6.2: keys the target offered on its own need our answer
            // before it can move on (its declarations need none).
            let mut theirs = TextKeys::new();
            for (k, v) in &answers.0 {
                if k != "MaxRecvDataSegmentLength" && !offered.contains(k) {
                    theirs.push(k.clone(), v.clone());
                }
            }
            sent = negotiated.answer(&theirs, &opts.params);
            offered.extend(sent.0.iter().map(|(k, _)| k.clone()));
        }
    }
    if resp.tsih == 0 {
        return Err(InitiatorError::Protocol(
            "final Login Response has TSIH 0 (§11.13.4)".into(),
        ));
    }
    Ok(LoggedIn {
        stream: x.stream,
        buf: x.buf,
        negotiated,
        tsih: resp.tsih,
        // §4.2.2.1: the leading Login Request's CmdSN is also the first
        // command's; the target's ExpCmdSN says the same.
        cmd_sn: resp.exp_cmd_sn,
        exp_stat_sn: resp.stat_sn.wrapping_add(1),
        exp_cmd_sn: resp.exp_cmd_sn,
        max_cmd_sn: resp.max_cmd_sn,
        our_max_recv,
    })
}

/// A target a discovery session reported (RFC 7143 Appendix C).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredTarget {
    /// TargetName.
    pub name: String,
    /// Each TargetAddress: `host:port,portal-group-tag`.
    pub addresses: Vec<String>,
}

/// The `host:port` to connect to for a TargetAddress value
/// (`domainname[:port][,portal-group-tag]`, RFC 7143 §13.8); the port
/// defaults to 3260.
pub(crate) fn portal_of(target_address: &str) -> Option<String> {
    let hostport = target_address.split(',').next().unwrap_or("").trim();
    if hostport.is_empty() {
        return None;
    }
    let has_port = if let Some(rest) = hostport.strip_prefix('[') {
        rest.split_once(']')
            .is_some_and(|(_, p)| p.starts_with(':'))
    } else {
        hostport.contains(':')
    };
    Some(if has_port {
        hostport.to_string()
    } else {
        format!("{hostport}:{}", super::DEFAULT_PORT)
    })
}

/// Opens a discovery session, asks `SendTargets=All`, logs out.
pub(crate) async fn send_targets(
    addr: &str,
    opts: &LoginOptions,
    isid: [u8; 6],
) -> Result<Vec<DiscoveredTarget>, InitiatorError> {
    let li = login(addr, opts, SessionKind::Discovery, isid).await?;
    let codec = PduCodec {
        digests: Digests {
            header: li.negotiated.params.header_digest,
            data: li.negotiated.params.data_digest,
        },
        max_recv_data_segment: li.our_max_recv,
    };
    let mut x = Exchange {
        addr,
        stream: li.stream,
        buf: li.buf,
        codec,
        isid,
        tsih: li.tsih,
        itt: 1,
        cmd_sn: li.cmd_sn,
        exp_stat_sn: li.exp_stat_sn,
        target: "discovery",
    };
    let mut body = TextKeys::new();
    body.push("SendTargets", "All");
    let mut data = body.encode();
    let mut ttt = RESERVED_TAG;
    let mut all = Vec::new();
    let all = loop {
        let req = TextRequest {
            immediate: false,
            final_: true,
            cont: false,
            lun: Default::default(),
            itt: x.itt,
            ttt,
            cmd_sn: x.cmd_sn,
            exp_stat_sn: x.exp_stat_sn,
        };
        x.send(&Pdu::new(
            Header::TextRequest(req),
            std::mem::take(&mut data),
        ))
        .await?;
        x.cmd_sn = x.cmd_sn.wrapping_add(1);
        let pdu = x.recv().await?;
        let Header::TextResponse(resp) = pdu.header else {
            return Err(InitiatorError::Protocol(format!(
                "{} in answer to SendTargets",
                pdu.header.name()
            )));
        };
        x.exp_stat_sn = resp.stat_sn.wrapping_add(1);
        // §11.11.1: a Text Response without F (or with C) is answered with
        // an empty Text Request carrying its Target Transfer Tag; the pieces
        // concatenate (a key may be split across PDUs).
        if all.len() + pdu.data.len() > MAX_SEND_TARGETS_TEXT {
            return Err(InitiatorError::Protocol(format!(
                "SendTargets answer exceeds {MAX_SEND_TARGETS_TEXT} bytes"
            )));
        }
        all.extend_from_slice(&pdu.data);
        if !resp.cont && resp.final_ {
            break all;
        }
        ttt = resp.ttt;
    };
    let keys = TextKeys::parse(&all)
        .map_err(|e| InitiatorError::Protocol(format!("SendTargets text: {e}")))?;
    let mut targets: Vec<DiscoveredTarget> = Vec::new();
    for (k, v) in keys.0 {
        match (k.as_str(), targets.last_mut()) {
            ("TargetName", _) => targets.push(DiscoveredTarget {
                name: v,
                addresses: Vec::new(),
            }),
            ("TargetAddress", Some(t)) => t.addresses.push(v),
            _ => {}
        }
    }
    // Close the discovery session politely (§11.14); the answer does not
    // matter, the socket is dropped either way.
    let logout = LogoutRequest {
        immediate: true,
        reason: 0,
        itt: 2,
        cid: 0,
        cmd_sn: x.cmd_sn,
        exp_stat_sn: x.exp_stat_sn,
    };
    if x.send(&Pdu::header_only(Header::LogoutRequest(logout)))
        .await
        .is_ok()
    {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), x.recv()).await;
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(pairs: &[(&str, &str)]) -> TextKeys {
        let mut k = TextKeys::new();
        for (a, b) in pairs {
            k.push(*a, *b);
        }
        k
    }

    #[test]
    fn chap_answer_follows_rfc1994() {
        let chap = Chap {
            user: "alice".into(),
            secret: b"secret".to_vec(),
        };
        let challenge = [0xaa; 16];
        let offer = keys(&[
            ("CHAP_A", "5"),
            ("CHAP_I", "1"),
            ("CHAP_C", &chap::encode_hex(&challenge)),
        ]);
        let a = chap_answer(&chap, &offer).unwrap();
        assert_eq!(a.get("CHAP_N"), Some("alice"));
        assert_eq!(
            a.get("CHAP_R"),
            Some(chap::encode_hex(&chap::response(1, b"secret", &challenge)).as_str())
        );
    }

    #[test]
    fn chap_answer_refuses_bad_offers() {
        let chap = Chap {
            user: "u".into(),
            secret: b"s".to_vec(),
        };
        for offer in [
            keys(&[("CHAP_A", "7"), ("CHAP_I", "1"), ("CHAP_C", "0x01")]),
            keys(&[("CHAP_A", "5"), ("CHAP_I", "300"), ("CHAP_C", "0x01")]),
            keys(&[("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", "zz")]),
            keys(&[("CHAP_A", "5"), ("CHAP_I", "1")]),
        ] {
            assert!(
                matches!(chap_answer(&chap, &offer), Err(InitiatorError::Chap(_))),
                "{offer:?}"
            );
        }
    }

    #[test]
    fn target_addresses() {
        assert_eq!(
            portal_of("10.0.0.2:3261,1").as_deref(),
            Some("10.0.0.2:3261")
        );
        assert_eq!(portal_of("10.0.0.2").as_deref(), Some("10.0.0.2:3260"));
        assert_eq!(
            portal_of("[fe80::1]:3300,2").as_deref(),
            Some("[fe80::1]:3300")
        );
        assert_eq!(portal_of("[fe80::1],2").as_deref(), Some("[fe80::1]:3260"));
        assert_eq!(
            portal_of("host.example,1").as_deref(),
            Some("host.example:3260")
        );
        assert_eq!(portal_of(""), None);
        assert_eq!(portal_of(",1"), None);
    }
}
