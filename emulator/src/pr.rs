//! Persistent reservations (SPC-4 5.9): registrations per I_T nexus, one
//! reservation of a given type, and the access rules each type imposes on
//! other initiators. Not preserved across power loss (APTPL unsupported:
//! PTPL_C=0).

use crate::error::{CheckCondition, CommandError, SenseKey};
use crate::sbc::InitiatorId;
use std::collections::BTreeMap;

/// How a command touches the unit, for SPC-4 table 69's conflict rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Allowed whatever the reservation (INQUIRY, REPORT LUNS, TEST UNIT
    /// READY, READ CAPACITY, the PR commands themselves, ...).
    Always,
    /// Reads the medium or unit state.
    Read,
    /// Writes the medium or unit state.
    Write,
}

/// Reservation types (SPC-4 table 166).
const WRITE_EXCLUSIVE: u8 = 1;
const EXCLUSIVE_ACCESS: u8 = 3;
const WE_REGISTRANTS_ONLY: u8 = 5;
const EA_REGISTRANTS_ONLY: u8 = 6;
const WE_ALL_REGISTRANTS: u8 = 7;
const EA_ALL_REGISTRANTS: u8 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    holder: InitiatorId,
    pr_type: u8,
}

/// Unit attentions a PERSISTENT RESERVE OUT raises for other nexuses.
pub type Attentions = Vec<(InitiatorId, CheckCondition)>;

/// The persistent reservation state of one logical unit.
#[derive(Debug, Clone, Default)]
pub struct PersistentReservations {
    generation: u32,
    keys: BTreeMap<InitiatorId, u64>,
    held: Option<Held>,
}

fn conflict() -> CommandError {
    CommandError::ReservationConflict
}

fn all_registrants(t: u8) -> bool {
    t == WE_ALL_REGISTRANTS || t == EA_ALL_REGISTRANTS
}

impl PersistentReservations {
    /// Is a persistent reservation held?
    pub fn is_reserved(&self) -> bool {
        self.held.is_some()
    }

    fn is_holder(&self, who: InitiatorId) -> bool {
        match self.held {
            Some(h) if all_registrants(h.pr_type) => self.keys.contains_key(&who),
            Some(h) => h.holder == who,
            None => false,
        }
    }

    /// SPC-4 5.9.1, table 69: does `who` conflict with the reservation?
    pub fn check(&self, who: InitiatorId, access: Access) -> Result<(), CommandError> {
        let Some(h) = self.held else { return Ok(()) };
        if access == Access::Always || self.is_holder(who) {
            return Ok(());
        }
        let registered = self.keys.contains_key(&who);
        let blocked = match (h.pr_type, access) {
            (WRITE_EXCLUSIVE, Access::Read) => false,
            (EXCLUSIVE_ACCESS, _) | (WRITE_EXCLUSIVE, _) => true,
            (WE_REGISTRANTS_ONLY | WE_ALL_REGISTRANTS, Access::Read) => false,
            _ => !registered,
        };
        if blocked {
            Err(conflict())
        } else {
            Ok(())
        }
    }

    /// PERSISTENT RESERVE IN.
    pub fn read(&self, service_action: u8, out: &mut Vec<u8>) -> Result<(), CommandError> {
        out.extend_from_slice(&self.generation.to_be_bytes());
        match service_action {
            // READ KEYS
            0 => {
                out.extend_from_slice(&((self.keys.len() * 8) as u32).to_be_bytes());
                for k in self.keys.values() {
                    out.extend_from_slice(&k.to_be_bytes());
                }
            }
            // READ RESERVATION
            1 => match self.held {
                None => out.extend_from_slice(&0u32.to_be_bytes()),
                Some(h) => {
                    out.extend_from_slice(&16u32.to_be_bytes());
                    // All-registrants reservations report key 0 (SPC-4 6.15.3).
                    let key = if all_registrants(h.pr_type) {
                        0
                    } else {
                        self.keys.get(&h.holder).copied().unwrap_or(0)
                    };
                    out.extend_from_slice(&key.to_be_bytes());
                    out.extend_from_slice(&[0, 0, 0, 0, 0, h.pr_type, 0, 0]);
                }
            },
            // REPORT CAPABILITIES: no SPEC_I_PT, ALL_TG_PT or APTPL; every
            // type but the obsolete ones.
            2 => {
                out.clear();
                out.extend_from_slice(&[
                    0,
                    8,
                    0x00,
                    0x80,
                    0x80 | 0x40 | 0x20 | 0x08 | 0x02,
                    0x01,
                    0,
                    0,
                ]);
            }
            // READ FULL STATUS
            3 => {
                let mut body = Vec::new();
                for (who, key) in &self.keys {
                    let mut d = vec![0u8; 24];
                    d[0..8].copy_from_slice(&key.to_be_bytes());
                    if let Some(h) = self.held {
                        if self.is_holder(*who) {
                            d[12] = 0x01; // R_HOLDER
                            d[13] = h.pr_type;
                        }
                    }
                    d[19] = 1; // RELATIVE TARGET PORT IDENTIFIER
                               // iSCSI TransportID (SPC-4 7.6.4.6): the emulator knows
                               // initiators by number only, so the name is synthetic.
                    let mut name = format!("iqn.2026-11.dev.scuzz:initiator-{who}").into_bytes();
                    name.push(0);
                    name.resize(name.len().next_multiple_of(4), 0);
                    let mut tid = vec![0x05, 0];
                    tid.extend_from_slice(&(name.len() as u16).to_be_bytes());
                    tid.extend_from_slice(&name);
                    d[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
                    d.extend_from_slice(&tid);
                    body.extend_from_slice(&d);
                }
                out.extend_from_slice(&(body.len() as u32).to_be_bytes());
                out.extend_from_slice(&body);
            }
            _ => return Err(CheckCondition::invalid_field_in_cdb(1, Some(4)).into()),
        }
        Ok(())
    }

    /// PERSISTENT RESERVE OUT with its parameter list. Returns the unit
    /// attentions to raise for other nexuses.
    pub fn write(
        &mut self,
        who: InitiatorId,
        service_action: u8,
        scope: u8,
        pr_type: u8,
        params: &[u8],
    ) -> Result<Attentions, CommandError> {
        // SPC-4 6.16.3: the basic parameter list is 24 bytes.
        let p: &[u8; 24] = params
            .get(..24)
            .and_then(|p| p.try_into().ok())
            .ok_or(CheckCondition::parameter_list_length())?;
        let rk = u64::from_be_bytes(p[0..8].try_into().expect("8 bytes"));
        let sark = u64::from_be_bytes(p[8..16].try_into().expect("8 bytes"));
        if p[20] & 0x08 != 0 {
            return Err(CheckCondition::invalid_field_in_parameter_list(20).into());
            // SPEC_I_PT
        }
        if p[20] & 0x01 != 0 {
            return Err(CheckCondition::invalid_field_in_parameter_list(20).into());
            // APTPL
        }
        let mine = self.keys.get(&who).copied();
        let mut ua = Attentions::new();
        let key_ok = |mine: Option<u64>| mine.is_some_and(|k| k == rk);
        match service_action {
            // REGISTER / REGISTER AND IGNORE EXISTING KEY
            0 | 6 => {
                if service_action == 0 {
                    match mine {
                        None if rk != 0 => return Err(conflict()),
                        Some(k) if k != rk => return Err(conflict()),
                        _ => {}
                    }
                }
                if sark == 0 {
                    if mine.is_some() {
                        self.unregister(who, &mut ua);
                    }
                } else {
                    self.keys.insert(who, sark);
                    self.generation = self.generation.wrapping_add(1);
                }
            }
            // RESERVE
            1 => {
                if !key_ok(mine) {
                    return Err(conflict());
                }
                Self::check_scope_type(scope, pr_type)?;
                match self.held {
                    None => {
                        self.held = Some(Held {
                            holder: who,
                            pr_type,
                        })
                    }
                    Some(h) if self.is_holder(who) && h.pr_type == pr_type => {}
                    Some(_) => return Err(conflict()),
                }
            }
            // RELEASE
            2 => {
                if !key_ok(mine) {
                    return Err(conflict());
                }
                if let Some(h) = self.held {
                    if self.is_holder(who) {
                        if h.pr_type != pr_type || scope != 0 {
                            // 26/04 INVALID RELEASE OF PERSISTENT RESERVATION
                            return Err(
                                CheckCondition::new(SenseKey::IllegalRequest, 0x26, 0x04).into()
                            );
                        }
                        self.held = None;
                        if h.pr_type != WRITE_EXCLUSIVE && h.pr_type != EXCLUSIVE_ACCESS {
                            self.attention_others(who, 0x04, &mut ua);
                        }
                    }
                }
            }
            // CLEAR
            3 => {
                if !key_ok(mine) {
                    return Err(conflict());
                }
                self.attention_others(who, 0x03, &mut ua);
                self.keys.clear();
                self.held = None;
                self.generation = self.generation.wrapping_add(1);
            }
            // PREEMPT / PREEMPT AND ABORT (no task set to abort here)
            4 | 5 => {
                if !key_ok(mine) {
                    return Err(conflict());
                }
                let holder_key = self.held.and_then(|h| self.keys.get(&h.holder).copied());
                let all_reg = self.held.is_some_and(|h| all_registrants(h.pr_type));
                let takes_reservation =
                    self.held.is_some() && ((all_reg && sark == 0) || holder_key == Some(sark));
                if takes_reservation {
                    Self::check_scope_type(scope, pr_type)?;
                }
                let victims: Vec<InitiatorId> = self
                    .keys
                    .iter()
                    .filter(|(w, k)| **w != who && (**k == sark || (all_reg && sark == 0)))
                    .map(|(w, _)| *w)
                    .collect();
                if victims.is_empty() && !takes_reservation {
                    return Err(conflict());
                }
                for v in &victims {
                    self.keys.remove(v);
                    // 2A/05 REGISTRATIONS PREEMPTED
                    ua.push((*v, CheckCondition::new(SenseKey::UnitAttention, 0x2a, 0x05)));
                }
                if takes_reservation {
                    self.held = Some(Held {
                        holder: who,
                        pr_type,
                    });
                }
                self.generation = self.generation.wrapping_add(1);
            }
            // REGISTER AND MOVE is not supported (no second target port).
            _ => return Err(CheckCondition::invalid_field_in_cdb(1, Some(4)).into()),
        }
        Ok(ua)
    }

    fn check_scope_type(scope: u8, pr_type: u8) -> Result<(), CommandError> {
        // LU_SCOPE only; the obsolete and reserved types are invalid.
        if scope != 0
            || !matches!(
                pr_type,
                WRITE_EXCLUSIVE
                    | EXCLUSIVE_ACCESS
                    | WE_REGISTRANTS_ONLY
                    | EA_REGISTRANTS_ONLY
                    | WE_ALL_REGISTRANTS
                    | EA_ALL_REGISTRANTS
            )
        {
            return Err(CheckCondition::invalid_field_in_cdb(2, None).into());
        }
        Ok(())
    }

    fn unregister(&mut self, who: InitiatorId, ua: &mut Attentions) {
        let was_holder = self.is_holder(who);
        self.keys.remove(&who);
        self.generation = self.generation.wrapping_add(1);
        if let Some(h) = self.held {
            let release = if all_registrants(h.pr_type) {
                self.keys.is_empty()
            } else {
                was_holder
            };
            if release {
                self.held = None;
                if h.pr_type == WE_REGISTRANTS_ONLY || h.pr_type == EA_REGISTRANTS_ONLY {
                    self.attention_others(who, 0x04, ua);
                }
            }
        }
    }

    /// 2A/`ascq` for every registrant but `who`.
    fn attention_others(&self, who: InitiatorId, ascq: u8, ua: &mut Attentions) {
        for w in self.keys.keys().filter(|w| **w != who) {
            ua.push((*w, CheckCondition::new(SenseKey::UnitAttention, 0x2a, ascq)));
        }
    }

    /// Power loss: without APTPL, everything goes.
    pub fn power_loss(&mut self) {
        self.keys.clear();
        self.held = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(rk: u64, sark: u64) -> Vec<u8> {
        let mut p = vec![0u8; 24];
        p[0..8].copy_from_slice(&rk.to_be_bytes());
        p[8..16].copy_from_slice(&sark.to_be_bytes());
        p
    }

    #[test]
    fn register_reserve_and_access_rules() {
        let mut pr = PersistentReservations::default();
        pr.write(1, 0, 0, 0, &params(0, 0xa)).unwrap();
        assert_eq!(
            pr.write(2, 0, 0, 0, &params(0xb, 0xc)),
            Err(conflict()),
            "unregistered with a key"
        );
        pr.write(2, 6, 0, 0, &params(0, 0xb)).unwrap();
        pr.write(1, 1, 0, WRITE_EXCLUSIVE, &params(0xa, 0)).unwrap();
        assert!(pr.check(2, Access::Read).is_ok());
        assert_eq!(pr.check(2, Access::Write), Err(conflict()));
        assert!(pr.check(1, Access::Write).is_ok());
        assert_eq!(
            pr.write(2, 1, 0, WRITE_EXCLUSIVE, &params(0xb, 0)),
            Err(conflict())
        );
        // Preempt: 2 takes the reservation and removes 1's registration.
        let ua = pr
            .write(2, 4, 0, EXCLUSIVE_ACCESS, &params(0xb, 0xa))
            .unwrap();
        assert_eq!(ua.len(), 1);
        assert_eq!(ua[0].0, 1);
        assert_eq!(pr.check(1, Access::Read), Err(conflict()));
        let mut out = Vec::new();
        pr.read(0, &mut out).unwrap();
        assert_eq!(&out[4..8], &8u32.to_be_bytes());
        let mut out = Vec::new();
        pr.read(1, &mut out).unwrap();
        assert_eq!(out[21], EXCLUSIVE_ACCESS);
        assert!(pr.read(4, &mut Vec::new()).is_err());
        assert_eq!(
            pr.write(2, 2, 0, WRITE_EXCLUSIVE, &params(0xb, 0))
                .unwrap_err()
                .status()
                .0,
            2,
            "wrong type"
        );
        pr.write(2, 3, 0, 0, &params(0xb, 0)).unwrap();
        assert!(!pr.is_reserved());
        assert_eq!(
            pr.write(1, 0, 0, 0, &params(0, 1)[..20]),
            Err(CheckCondition::parameter_list_length().into())
        );
    }
}
