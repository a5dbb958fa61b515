//! The target's side of login (RFC 7143 §6): security negotiation (None or
//! CHAP), operational negotiation, and the move to the full-feature phase.

use super::session::Connection;
use super::{Registry, TargetConfig};
use crate::codec::CodecError;
use crate::login::chap;
use crate::login::{LoginStatus, Negotiated};
use crate::pdu::{Header, LoginRequest, LoginResponse, Pdu, PduError, Stage};
use crate::text::{TextAssembler, TextKeys};
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::Notify;

/// Why a login did not reach the full-feature phase.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The connection failed or framing was lost.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The peer closed the connection during login.
    #[error("connection closed during login")]
    Closed,
    /// A PDU other than a Login Request arrived during login.
    #[error("{0} PDU during login")]
    NotLogin(&'static str),
    /// A Login Request was malformed.
    #[error("malformed Login Request: {0}")]
    Malformed(#[from] PduError),
    /// The target refused the login with this status (sent to the initiator).
    #[error("{status}: {why}")]
    Refused {
        /// The status sent in the final Login Response.
        status: LoginStatus,
        /// Detail for the log.
        why: String,
    },
}

impl From<std::io::Error> for LoginError {
    fn from(e: std::io::Error) -> Self {
        LoginError::Codec(CodecError::Io(e))
    }
}

/// A completed login.
#[derive(Debug)]
pub struct Established {
    /// InitiatorName.
    pub initiator_name: String,
    /// SCSI initiator port name: `InitiatorName,i,0xISID`.
    pub port_name: String,
    /// ISID.
    pub isid: [u8; 6],
    /// TSIH the target assigned.
    pub tsih: u16,
    /// SessionType=Discovery.
    pub discovery: bool,
    /// Negotiated parameters.
    pub negotiated: Negotiated,
    /// ExpCmdSN after login.
    pub exp_cmd_sn: u32,
    /// Next StatSN to send.
    pub stat_sn: u32,
    /// Notified when a newer login reinstates this session.
    pub kill: Arc<Notify>,
}

enum Auth {
    /// No AuthMethod agreed yet.
    Start,
    /// AuthMethod=CHAP answered, waiting for CHAP_A.
    ChapAlgorithm,
    /// Challenge sent, waiting for CHAP_N/CHAP_R.
    ChapResponse { id: u8, challenge: [u8; 16] },
    /// Authenticated (or no authentication needed).
    Done,
}

fn refuse(status: LoginStatus, why: impl Into<String>) -> LoginError {
    LoginError::Refused {
        status,
        why: why.into(),
    }
}

/// Runs login on `conn` until the full-feature phase or a refusal (which is
/// sent to the initiator before returning).
pub(crate) async fn run(
    conn: &mut Connection,
    cfg: &TargetConfig,
    registry: &Registry,
) -> Result<Established, LoginError> {
    let mut st = State {
        negotiated: Negotiated {
            target_max_recv: cfg.max_recv_data_segment,
            ..Negotiated::default()
        },
        auth: if cfg.chap.is_some() {
            Auth::Start
        } else {
            Auth::Done
        },
        initiator_name: None,
        discovery: false,
        first: None,
        stat_sn: 1,
        sent_declarations: false,
    };
    let mut text = TextAssembler::default();
    loop {
        let Some(frame) = conn.read_frame().await? else {
            return Err(LoginError::Closed);
        };
        let pdu = frame.parse()?;
        let Header::LoginRequest(req) = pdu.header else {
            return Err(LoginError::NotLogin(pdu.header.name()));
        };
        if st.first.is_none() {
            st.first = Some(req.clone());
        }
        let first = st.first.clone().unwrap_or_else(|| req.clone());
        // RFC 7143 §6.1: a continued text gets an empty response with the
        // same stage and no transition until its last PDU arrives.
        let whole = match text.push(&pdu.data, req.cont) {
            Ok(Some(t)) => t,
            Ok(None) => {
                let resp = st.response(&req, &first, false, LoginStatus::SUCCESS);
                conn.send(&Pdu::header_only(Header::LoginResponse(resp)));
                conn.flush().await?;
                continue;
            }
            Err(e) => {
                st.fail(conn, &req, &first, LoginStatus::INITIATOR_ERROR)
                    .await?;
                return Err(e.into());
            }
        };
        match st.step(&req, &whole, cfg) {
            Ok((answers, transit)) => {
                let mut resp = st.response(&req, &first, transit, LoginStatus::SUCCESS);
                let done = transit && req.nsg == Stage::FullFeature;
                let (tsih, kill) = if done {
                    let name = st.initiator_name.clone().unwrap_or_default();
                    if st.discovery {
                        // Discovery sessions are never reinstated; they only
                        // need a TSIH.
                        (registry.tsih(), None)
                    } else {
                        let (t, k) = registry.register(&name, first.isid);
                        (t, Some(k))
                    }
                } else {
                    (0, None)
                };
                resp.tsih = tsih;
                if done {
                    resp.max_cmd_sn = req.cmd_sn.wrapping_add(cfg.cmd_window.max(1) - 1);
                }
                conn.send(&Pdu::new(Header::LoginResponse(resp), answers.encode()));
                conn.flush().await?;
                if done {
                    let name = st.initiator_name.clone().unwrap_or_default();
                    let isid_hex: String = first.isid.iter().map(|b| format!("{b:02x}")).collect();
                    return Ok(Established {
                        port_name: format!("{name},i,0x{isid_hex}"),
                        initiator_name: name,
                        isid: first.isid,
                        tsih,
                        discovery: st.discovery,
                        negotiated: st.negotiated,
                        exp_cmd_sn: req.cmd_sn,
                        stat_sn: st.stat_sn,
                        kill: kill.unwrap_or_default(),
                    });
                }
            }
            Err((status, why)) => {
                st.fail(conn, &req, &first, status).await?;
                return Err(refuse(status, why));
            }
        }
    }
}

struct State {
    negotiated: Negotiated,
    auth: Auth,
    initiator_name: Option<String>,
    discovery: bool,
    first: Option<LoginRequest>,
    stat_sn: u32,
    sent_declarations: bool,
}

type Refusal = (LoginStatus, String);

impl State {
    fn response(
        &mut self,
        req: &LoginRequest,
        first: &LoginRequest,
        transit: bool,
        status: LoginStatus,
    ) -> LoginResponse {
        let stat_sn = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        LoginResponse {
            transit,
            cont: false,
            csg: req.csg,
            nsg: if transit { req.nsg } else { req.csg },
            version_max: 0,
            version_active: 0,
            isid: first.isid,
            tsih: 0,
            itt: req.itt,
            stat_sn,
            exp_cmd_sn: req.cmd_sn,
            max_cmd_sn: req.cmd_sn,
            status_class: status.class,
            status_detail: status.detail,
        }
    }

    async fn fail(
        &mut self,
        conn: &mut Connection,
        req: &LoginRequest,
        first: &LoginRequest,
        status: LoginStatus,
    ) -> Result<(), LoginError> {
        let resp = self.response(req, first, false, status);
        conn.send(&Pdu::header_only(Header::LoginResponse(resp)));
        conn.flush().await?;
        Ok(())
    }

    /// Processes one (reassembled) Login Request: returns the keys to
    /// answer and whether the target agrees to the requested transition.
    fn step(
        &mut self,
        req: &LoginRequest,
        data: &[u8],
        cfg: &TargetConfig,
    ) -> Result<(TextKeys, bool), Refusal> {
        let keys =
            TextKeys::parse(data).map_err(|e| (LoginStatus::INITIATOR_ERROR, e.to_string()))?;
        // RFC 7143 §11.12.4: Version-min above what we speak (0) fails.
        if req.version_min > 0 {
            return Err((
                LoginStatus::UNSUPPORTED_VERSION,
                format!("version {}", req.version_min),
            ));
        }
        if req.tsih != 0 {
            // Adding a connection to an existing session needs
            // MaxConnections > 1, which this target does not offer.
            return Err((
                LoginStatus::SESSION_DOES_NOT_EXIST,
                format!("TSIH {:#06x}", req.tsih),
            ));
        }
        let mut out = TextKeys::new();
        if self.initiator_name.is_none() {
            let name = keys.get("InitiatorName").ok_or((
                LoginStatus::MISSING_PARAMETER,
                "no InitiatorName in the first Login Request".to_string(),
            ))?;
            self.initiator_name = Some(name.to_string());
            self.discovery = match keys.get("SessionType").unwrap_or("Normal") {
                "Normal" => false,
                "Discovery" => true,
                other => {
                    return Err((
                        LoginStatus::SESSION_TYPE_NOT_SUPPORTED,
                        format!("SessionType={other}"),
                    ))
                }
            };
            if !self.discovery {
                match keys.get("TargetName") {
                    None => {
                        return Err((
                            LoginStatus::MISSING_PARAMETER,
                            "no TargetName in a normal session".into(),
                        ))
                    }
                    Some(t) if t != cfg.iqn => {
                        return Err((LoginStatus::NOT_FOUND, format!("no target named {t}")))
                    }
                    Some(_) => {}
                }
                // RFC 7143 §13.9: TargetPortalGroupTag in the first Login
                // Response of a normal session.
                out.push("TargetPortalGroupTag", "1");
                if let Some(a) = &cfg.alias {
                    out.push("TargetAlias", a.clone());
                }
            }
        }
        let mut transit = req.transit;
        match req.csg {
            Stage::Security => {
                transit &= self.security(&keys, cfg, &mut out)?;
            }
            Stage::Operational => {
                if !matches!(self.auth, Auth::Done) {
                    // RFC 7143 §6.3: a target that requires authentication
                    // refuses a login that skips the security stage.
                    return Err((
                        LoginStatus::AUTHENTICATION_FAILURE,
                        "operational stage before authentication".into(),
                    ));
                }
            }
            Stage::FullFeature => {
                return Err((
                    LoginStatus::INITIATOR_ERROR,
                    "CSG is FullFeaturePhase".into(),
                ))
            }
        }
        if transit && req.nsg == Stage::Security {
            return Err((LoginStatus::INITIATOR_ERROR, "NSG moves backwards".into()));
        }
        // Operational keys may arrive in either stage (initiators that skip
        // security send them in the first PDU).
        let answers = self.negotiated.answer(&keys, &cfg.params);
        for (k, v) in answers.0 {
            out.push(k, v);
        }
        if keys.get("MaxRecvDataSegmentLength").is_some()
            || (transit && req.nsg == Stage::FullFeature && !self.sent_declarations)
        {
            out.push(
                "MaxRecvDataSegmentLength",
                cfg.max_recv_data_segment.to_string(),
            );
            self.sent_declarations = true;
        }
        Ok((out, transit))
    }

    /// Security stage; returns whether authentication is complete.
    fn security(
        &mut self,
        keys: &TextKeys,
        cfg: &TargetConfig,
        out: &mut TextKeys,
    ) -> Result<bool, Refusal> {
        if let Some(methods) = keys.get("AuthMethod") {
            let offered: Vec<&str> = methods.split(',').collect();
            let pick = if cfg.chap.is_some() {
                offered.contains(&"CHAP").then_some("CHAP")
            } else {
                offered.contains(&"None").then_some("None")
            };
            match pick {
                Some("CHAP") => {
                    out.push("AuthMethod", "CHAP");
                    self.auth = Auth::ChapAlgorithm;
                    return Ok(false);
                }
                Some(m) => out.push("AuthMethod", m),
                None => {
                    return Err((
                        LoginStatus::AUTHENTICATION_FAILURE,
                        format!("AuthMethod={methods} not acceptable"),
                    ))
                }
            }
        }
        match std::mem::replace(&mut self.auth, Auth::Done) {
            Auth::Done => Ok(true),
            Auth::Start => {
                self.auth = Auth::Start;
                if cfg.chap.is_some() {
                    Err((
                        LoginStatus::AUTHENTICATION_FAILURE,
                        "CHAP required but not offered".into(),
                    ))
                } else {
                    Ok(true)
                }
            }
            Auth::ChapAlgorithm => {
                let Some(algs) = keys.get("CHAP_A") else {
                    self.auth = Auth::ChapAlgorithm;
                    return Ok(false);
                };
                if !algs
                    .split(',')
                    .any(|a| a.parse::<u32>().ok() == Some(chap::CHAP_MD5))
                {
                    return Err((
                        LoginStatus::AUTHENTICATION_FAILURE,
                        format!("CHAP_A={algs} does not include MD5"),
                    ));
                }
                let challenge = chap::new_challenge()
                    .map_err(|e| (LoginStatus::TARGET_ERROR, format!("random source: {e}")))?;
                let id = challenge[0];
                out.push("CHAP_A", "5");
                out.push("CHAP_I", id.to_string());
                out.push("CHAP_C", chap::encode_hex(&challenge));
                self.auth = Auth::ChapResponse { id, challenge };
                Ok(false)
            }
            Auth::ChapResponse { id, challenge } => {
                let creds = cfg.chap.as_ref().ok_or((
                    LoginStatus::TARGET_ERROR,
                    "CHAP state without credentials".to_string(),
                ))?;
                let (Some(n), Some(r)) = (keys.get("CHAP_N"), keys.get("CHAP_R")) else {
                    return Err((
                        LoginStatus::AUTHENTICATION_FAILURE,
                        "CHAP_N/CHAP_R missing".into(),
                    ));
                };
                let expected = chap::response(id, &creds.secret, &challenge);
                let got = chap::decode_binary(r);
                if n != creds.user || got.as_deref() != Some(&expected[..]) {
                    return Err((
                        LoginStatus::AUTHENTICATION_FAILURE,
                        format!("CHAP response for {n} does not match"),
                    ));
                }
                if keys.get("CHAP_I").is_some() || keys.get("CHAP_C").is_some() {
                    return Err((
                        LoginStatus::AUTHENTICATION_FAILURE,
                        "mutual CHAP requested but no target secret is configured".into(),
                    ));
                }
                Ok(true)
            }
        }
    }
}
