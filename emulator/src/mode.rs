//! Mode parameters: the caching page (08h) and control page (0Ah), with
//! current, changeable, default and saved values, and MODE SELECT's rules
//! for changing them.
//!
//! SBC-3 6.4.5: WCE=1 lets the device complete writes from its cache; RCD=1
//! makes reads come from the medium. Both are changeable. The current values
//! survive a reset (a reset is not a power cycle); power loss brings back
//! the saved values, which MODE SELECT with SP=1 sets.

use crate::error::CheckCondition;

/// Caching mode page code.
pub const CACHING_PAGE: u8 = 0x08;
/// Control mode page code.
pub const CONTROL_PAGE: u8 = 0x0a;
/// "Return all pages".
pub const ALL_PAGES: u8 = 0x3f;

/// The caching page's variable bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caching {
    /// Write cache enable.
    pub wce: bool,
    /// Read cache disable.
    pub rcd: bool,
}

/// Page control field of MODE SENSE (SPC-4 6.11, table 98).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageControl {
    /// 00b current values.
    Current,
    /// 01b changeable values (a mask).
    Changeable,
    /// 10b default values.
    Default,
    /// 11b saved values.
    Saved,
}

impl PageControl {
    /// Decode the 2-bit PC field.
    pub fn from_bits(pc: u8) -> Self {
        match pc & 3 {
            0 => PageControl::Current,
            1 => PageControl::Changeable,
            2 => PageControl::Default,
            _ => PageControl::Saved,
        }
    }
}

/// The mode parameters of one logical unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModePages {
    /// Current caching values.
    pub current: Caching,
    /// Saved caching values (restored at power on).
    pub saved: Caching,
    default: Caching,
}

const CACHING_LEN: usize = 20;
const CONTROL_LEN: usize = 12;

impl ModePages {
    /// Pages with write caching as configured.
    pub fn new(wce_default: bool) -> Self {
        let c = Caching {
            wce: wce_default,
            rcd: false,
        };
        ModePages {
            current: c,
            saved: c,
            default: c,
        }
    }

    /// Power on: the saved values become current.
    pub fn power_on(&mut self) {
        self.current = self.saved;
    }

    fn caching(&self, pc: PageControl) -> [u8; CACHING_LEN] {
        let mut p = [0u8; CACHING_LEN];
        p[0] = CACHING_PAGE | 0x80; // PS: the page can be saved
        p[1] = (CACHING_LEN - 2) as u8;
        let v = match pc {
            PageControl::Changeable => {
                p[2] = 0x04 | 0x01;
                return p;
            }
            PageControl::Current => self.current,
            PageControl::Default => self.default,
            PageControl::Saved => self.saved,
        };
        p[2] = (u8::from(v.wce) << 2) | u8::from(v.rcd);
        p
    }

    fn control(pc: PageControl) -> [u8; CONTROL_LEN] {
        let mut p = [0u8; CONTROL_LEN];
        p[0] = CONTROL_PAGE;
        p[1] = (CONTROL_LEN - 2) as u8;
        if pc != PageControl::Changeable {
            // TST=000b (one task set), D_SENSE=0 (fixed-format sense, which
            // is all this device returns), QUEUE ALGORITHM MODIFIER=1
            // (unrestricted reordering of SIMPLE tasks), BUSY TIMEOUT
            // unlimited.
            p[3] = 0x10;
            p[8] = 0xff;
            p[9] = 0xff;
        }
        p
    }

    /// Append the requested page(s) for MODE SENSE; `None` if the page is
    /// not supported.
    pub fn sense_pages(
        &self,
        page: u8,
        subpage: u8,
        pc: PageControl,
        out: &mut Vec<u8>,
    ) -> Option<()> {
        // Subpages: only 00h exists, and FFh (all subpages) with all pages.
        match (page, subpage) {
            (CACHING_PAGE, 0) => out.extend_from_slice(&self.caching(pc)),
            (CONTROL_PAGE, 0) => out.extend_from_slice(&Self::control(pc)),
            (ALL_PAGES, 0) | (ALL_PAGES, 0xff) => {
                out.extend_from_slice(&self.caching(pc));
                out.extend_from_slice(&Self::control(pc));
            }
            _ => return None,
        }
        Some(())
    }

    /// Apply MODE SELECT page data (after the header and block descriptors).
    /// SPC-4 6.9: a page the unit does not have, a wrong page length, or a
    /// change to a bit that is not changeable ends the command with INVALID
    /// FIELD IN PARAMETER LIST, pointing at the offending byte. `base` is the
    /// offset of `pages` in the parameter list. Nothing changes unless the
    /// whole list is valid. Returns the new caching values.
    pub fn select(
        &mut self,
        pages: &[u8],
        base: usize,
        save: bool,
    ) -> Result<Caching, CheckCondition> {
        let mut next = self.current;
        let mut at = 0usize;
        while at < pages.len() {
            let field = |off: usize| {
                CheckCondition::invalid_field_in_parameter_list((base + at + off) as u16)
            };
            let hdr = pages
                .get(at..at + 2)
                .ok_or(CheckCondition::parameter_list_length())?;
            if hdr[0] & 0x40 != 0 {
                return Err(field(0)); // SPF: no subpages here
            }
            let code = hdr[0] & 0x3f;
            let len = usize::from(hdr[1]) + 2;
            let body = pages
                .get(at..at + len)
                .ok_or(CheckCondition::parameter_list_length())?;
            match code {
                CACHING_PAGE => {
                    if len != CACHING_LEN {
                        return Err(field(1));
                    }
                    let cur = self.caching(PageControl::Current);
                    for i in 2..len {
                        let mask = if i == 2 { 0x05 } else { 0 };
                        if (body[i] ^ cur[i]) & !mask != 0 {
                            return Err(field(i));
                        }
                    }
                    next = Caching {
                        wce: body[2] & 4 != 0,
                        rcd: body[2] & 1 != 0,
                    };
                }
                CONTROL_PAGE => {
                    if len != CONTROL_LEN {
                        return Err(field(1));
                    }
                    let cur = Self::control(PageControl::Current);
                    if let Some(i) = (2..len).find(|i| body[*i] != cur[*i]) {
                        return Err(field(i));
                    }
                }
                _ => return Err(field(0)),
            }
            at += len;
        }
        self.current = next;
        if save {
            self.saved = next;
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wce_is_changeable_and_other_bits_are_not() {
        let mut m = ModePages::new(true);
        let mut page = Vec::new();
        m.sense_pages(CACHING_PAGE, 0, PageControl::Current, &mut page)
            .unwrap();
        assert_eq!(page[2], 0x04);
        page[0] &= 0x3f; // PS is reserved in MODE SELECT
        page[2] = 0x00;
        assert_eq!(
            m.select(&page, 8, false).unwrap(),
            Caching {
                wce: false,
                rcd: false
            }
        );
        assert!(m.saved.wce, "not saved without SP");
        page[2] = 0x08; // MF is not changeable
        assert_eq!(
            m.select(&page, 8, false).unwrap_err(),
            CheckCondition::invalid_field_in_parameter_list(10)
        );
        m.power_on();
        assert!(m.current.wce);
    }

    #[test]
    fn unknown_pages_are_rejected() {
        let mut m = ModePages::new(true);
        assert!(m
            .sense_pages(0x19, 0, PageControl::Current, &mut Vec::new())
            .is_none());
        assert_eq!(m.select(&[0x19, 2, 0, 0], 4, false).unwrap_err().asc, 0x26);
        assert_eq!(m.select(&[0x08, 18, 0], 4, false).unwrap_err().asc, 0x1a);
    }
}
