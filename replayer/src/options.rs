//! Validated replay options: the second layer below the CLI's flags, so the
//! engine never parses a string and a test can build options directly.

use crate::error::ReplayError;
use std::fmt;
use std::str::FromStr;

/// When each command is issued.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Timing {
    /// As fast as possible: the queue depth and ordering rules are the only
    /// brakes.
    Afap,
    /// The recording's inter-submission gaps, divided by the factor (2.0
    /// replays twice as fast, 0.5 at half speed). `original` is 1.0.
    Scaled(f64),
}

impl FromStr for Timing {
    type Err = ReplayError;
    fn from_str(s: &str) -> Result<Self, ReplayError> {
        match s {
            "afap" => Ok(Timing::Afap),
            "original" => Ok(Timing::Scaled(1.0)),
            _ => {
                let x = s.strip_prefix("scale=").ok_or_else(|| {
                    ReplayError::usage(
                        "--timing",
                        format!("`{s}`: expected afap, original or scale=X"),
                    )
                })?;
                let f: f64 = x.parse().map_err(|_| {
                    ReplayError::usage("--timing", format!("`{x}` is not a number"))
                })?;
                if !(f.is_finite() && f > 0.0) {
                    return Err(ReplayError::usage(
                        "--timing",
                        "the scale must be a positive number",
                    ));
                }
                Ok(Timing::Scaled(f))
            }
        }
    }
}

impl fmt::Display for Timing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timing::Afap => f.write_str("afap"),
            Timing::Scaled(x) if *x == 1.0 => f.write_str("original"),
            Timing::Scaled(x) => write!(f, "scale={x}"),
        }
    }
}

/// Which commands may be in flight together.
///
/// Commands are always issued in trace order; the order mode decides how
/// long a command waits for earlier ones to complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// As recorded: a command waits for every command whose completion the
    /// recording shows before its submission, and for everything `Overlap`
    /// requires.
    #[default]
    Strict,
    /// Commands touching overlapping LBA ranges keep their order, and
    /// nothing crosses a flush or a command without an LBA range (MODE
    /// SELECT, UNMAP, ...) or an ORDERED task.
    Overlap,
    /// Only the queue depth limits concurrency.
    Free,
}

impl FromStr for Order {
    type Err = ReplayError;
    fn from_str(s: &str) -> Result<Self, ReplayError> {
        match s {
            "strict" => Ok(Order::Strict),
            "overlap" => Ok(Order::Overlap),
            "free" => Ok(Order::Free),
            _ => Err(ReplayError::usage(
                "--order",
                format!("`{s}`: expected strict, overlap or free"),
            )),
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Order::Strict => "strict",
            Order::Overlap => "overlap",
            Order::Free => "free",
        })
    }
}

/// `--lun-map A=B`: commands the trace sent to LUN A go to LUN B.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LunMap(Vec<(u64, u64)>);

impl LunMap {
    /// Adds one `A=B` mapping.
    pub fn add(&mut self, spec: &str) -> Result<(), ReplayError> {
        let bad = || {
            ReplayError::usage(
                "--lun-map",
                format!("`{spec}`: expected FROM=TO, two LUN numbers"),
            )
        };
        let (a, b) = spec.split_once('=').ok_or_else(bad)?;
        let a: u64 = a.trim().parse().map_err(|_| bad())?;
        let b: u64 = b.trim().parse().map_err(|_| bad())?;
        if self.0.iter().any(|(x, _)| *x == a) {
            return Err(ReplayError::usage(
                "--lun-map",
                format!("LUN {a} is mapped twice"),
            ));
        }
        self.0.push((a, b));
        Ok(())
    }

    /// The LUN a command recorded for `lun` is sent to.
    pub fn map(&self, lun: u64) -> u64 {
        self.0
            .iter()
            .find(|(a, _)| *a == lun)
            .map_or(lun, |(_, b)| *b)
    }
}

/// How to replay, independent of where to.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Commands in flight at most; `None`: the highest depth the recording
    /// reached (found in a first streaming pass).
    pub qd: Option<u32>,
    /// Pacing.
    pub timing: Timing,
    /// Ordering rules.
    pub order: Order,
    /// Passes over the trace.
    pub repeat: u32,
    /// Stop after this many commands (across passes).
    pub limit: Option<u64>,
    /// LUN remapping.
    pub lun_map: LunMap,
    /// Check read data with the oracle and the block classifier, and compare
    /// completions with the recording.
    pub verify: bool,
    /// Cut power right after each of these trace sequence numbers completes.
    pub power_loss_at: Vec<u64>,
    /// Seed for fresh write data.
    pub seed: u64,
    /// Every WRITE carries fresh self-describing blocks (from `seed` and
    /// the write's number), never the trace's recipe or bytes. A real
    /// device keeps what an earlier replay wrote, and a lost write of the
    /// very same data would read back right; fresh data (with a new seed
    /// each run) cannot be mistaken for it.
    pub fresh_data: bool,
    /// Show a progress bar (only drawn on a terminal).
    pub progress: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            qd: None,
            timing: Timing::Afap,
            order: Order::Strict,
            repeat: 1,
            limit: None,
            lun_map: LunMap::default(),
            verify: false,
            power_loss_at: Vec::new(),
            seed: 0x5c022,
            fresh_data: false,
            progress: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_parses_the_three_forms() {
        assert_eq!("afap".parse::<Timing>().unwrap(), Timing::Afap);
        assert_eq!("original".parse::<Timing>().unwrap(), Timing::Scaled(1.0));
        assert_eq!("scale=2.5".parse::<Timing>().unwrap(), Timing::Scaled(2.5));
        assert!("scale=0".parse::<Timing>().is_err());
        assert!("scale=-1".parse::<Timing>().is_err());
        assert!("fast".parse::<Timing>().is_err());
    }

    #[test]
    fn lun_map_rejects_garbage_and_duplicates() {
        let mut m = LunMap::default();
        m.add("0=3").unwrap();
        assert_eq!(m.map(0), 3);
        assert_eq!(m.map(1), 1);
        assert!(m.add("0=4").is_err());
        assert!(m.add("x=1").is_err());
        assert!(m.add("5").is_err());
    }
}
