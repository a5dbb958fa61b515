//! An iSCSI target as a replay destination: a thin adapter over the
//! workspace's initiator ([`iscsi::initiator::Session`]), which pipelines
//! commands in the CmdSN window, so `--qd` commands are on the wire at once.
//!
//! The URL names one LUN (`iscsi://host:port/iqn/lun`): commands the trace
//! sent to LUN 0 go there, other LUNs keep their number (`--lun-map` moves
//! them first).

use super::{Backend, BackendError, Outcome, Request};
use bytes::Bytes;
use iscsi::initiator::{Chap, CommandRequest, IscsiUrl, LoginOptions, PowerCycle, Session};
use iscsi::pdu::TaskAttribute;
use trace::{Direction, ScsiStatus, ServiceResponse, TaskAttr};

/// A logged-in session to one target.
pub struct IscsiBackend {
    session: Session,
    lun: u16,
    name: String,
    power_cycle: PowerCycle,
}

impl IscsiBackend {
    /// Parses `url`, logs in (with CHAP when `chap` or the URL's user-info
    /// gives credentials); a power loss in the trace becomes `power_cycle`.
    pub async fn open(
        url: &str,
        chap: Option<(String, String)>,
        power_cycle: PowerCycle,
    ) -> Result<IscsiBackend, BackendError> {
        let parsed: IscsiUrl = url
            .parse()
            .map_err(|e: iscsi::initiator::UrlError| BackendError::Refused(e.to_string()))?;
        let mut opts = LoginOptions::from_url(&parsed);
        if let Some((user, secret)) = chap {
            opts.chap = Some(Chap {
                user,
                secret: secret.into_bytes(),
            });
        }
        let session = Session::login(&parsed.addr(), &opts)
            .await
            .map_err(|e| BackendError::Transport(format!("login to {}: {e}", parsed.addr())))?;
        let name = format!(
            "iscsi://{}/{}/{}",
            parsed.addr(),
            parsed.target_iqn,
            parsed.lun
        );
        Ok(IscsiBackend {
            session,
            lun: parsed.lun,
            name,
            power_cycle,
        })
    }

    fn lun(&self, recorded: u64) -> Result<u16, BackendError> {
        if recorded == 0 {
            return Ok(self.lun);
        }
        u16::try_from(recorded).map_err(|_| {
            BackendError::Refused(format!(
                "LUN {recorded} does not fit iSCSI's flat LUN format"
            ))
        })
    }
}

fn attr(a: TaskAttr) -> TaskAttribute {
    match a {
        TaskAttr::Simple => TaskAttribute::Simple,
        TaskAttr::Ordered => TaskAttribute::Ordered,
        TaskAttr::HeadOfQueue => TaskAttribute::HeadOfQueue,
        TaskAttr::Aca => TaskAttribute::Aca,
    }
}

impl Backend for IscsiBackend {
    fn describe(&self) -> String {
        self.name.clone()
    }

    async fn execute(&self, req: Request) -> Result<Outcome, BackendError> {
        let lun = self.lun(req.lun)?;
        let write = req.dir == Direction::ToDevice;
        let xfer = req.xfer_len;
        let mut cr = CommandRequest::read(
            lun,
            &req.cdb,
            if req.dir == Direction::FromDevice {
                xfer
            } else {
                0
            },
        );
        cr.attr = attr(req.attr);
        if write {
            cr.data_out = Bytes::from(req.data);
        }
        let r = self
            .session
            .command(&cr)
            .await
            .map_err(|e| BackendError::Transport(e.to_string()))?;
        let residual = r.residual.signed();
        let (data, moved) = if write {
            (
                Vec::new(),
                (i64::from(xfer) - residual.max(0)).clamp(0, i64::from(xfer)) as u32,
            )
        } else {
            let d = Vec::from(r.data_in);
            let n = d.len() as u32;
            (d, n)
        };
        Ok(Outcome {
            // RFC 7143 §11.4.3: 0x00 command completed at target.
            response: if r.response == 0 {
                ServiceResponse::TaskComplete
            } else {
                ServiceResponse::DeliveryFailure
            },
            status: ScsiStatus(r.status),
            sense: r.sense.to_vec(),
            bytes_transferred: moved,
            residual,
            data,
        })
    }

    /// Logs out (RFC 7143 §11.14).
    async fn close(&self) -> Result<(), BackendError> {
        self.session
            .logout()
            .await
            .map_err(|e| BackendError::Transport(e.to_string()))
    }

    /// What the user offered as a power cycle (a LOGICAL UNIT RESET unless
    /// told otherwise): a real target has no switch the replayer reaches.
    async fn power_loss(&self) -> Result<(), BackendError> {
        self.session
            .power_cycle(self.lun, &self.power_cycle)
            .await
            .map_err(|e| BackendError::Transport(e.to_string()))
    }

    async fn reset(&self) -> Result<(), BackendError> {
        self.session
            .lun_reset(self.lun)
            .await
            .map_err(|e| BackendError::Transport(e.to_string()))?;
        Ok(())
    }
}
