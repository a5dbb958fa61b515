//! The live progress line: commands, MB/s, IOPS and p99 so far. indicatif
//! draws it only on a terminal, so pipes and CI logs stay clean.

use crate::latency::Latency;
use crate::report::human_ns;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Redraw at most this often; the hot path only counts.
const REDRAW: Duration = Duration::from_millis(200);

/// A progress bar, or nothing.
pub struct Progress {
    bar: Option<ProgressBar>,
    last: Instant,
    ticks: u32,
}

impl Progress {
    /// A bar over `total` commands (a spinner when unknown), drawn on
    /// stderr if `enabled` and stderr is a terminal.
    pub fn new(enabled: bool, total: Option<u64>) -> Progress {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = match total {
                Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            };
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} cmds {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Progress {
            bar,
            last: Instant::now(),
            ticks: 0,
        }
    }

    /// Counts one completion; redraws now and then.
    pub fn tick(&mut self, lat: &Latency) {
        let Some(bar) = &self.bar else { return };
        self.ticks += 1;
        // Reading the clock every completion would cost more than the bar.
        if self.ticks & 255 != 0 || self.last.elapsed() < REDRAW {
            return;
        }
        self.last = Instant::now();
        let secs = lat.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(lat.commands());
        bar.set_message(format!(
            "{:.1} MB/s, {:.0} IOPS, p99 {}",
            lat.total_bytes() as f64 / secs / 1e6,
            lat.commands() as f64 / secs,
            human_ns(lat.all.value_at_quantile(0.99))
        ));
    }

    /// Removes the bar.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
