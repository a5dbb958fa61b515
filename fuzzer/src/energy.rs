//! Energy: how long the campaign mutates an entry each time the scheduler
//! hands it over.
//!
//! LibAFL's [`StdMutationalStage`](libafl::stages::StdMutationalStage) runs
//! a random 1 to 128 mutants of every entry, whatever one of them costs.
//! Our programs' costs spread over almost three orders of magnitude: a
//! program that writes 15,000 blocks and then loses power costs about fifty
//! times a 32-op one, and in a queue grown from small seeds a fifth of the
//! entries took 70% of the harness's time. Counting mutants gave those few
//! heavy entries most of a campaign.
//!
//! [`TimedMutationalStage`] hands each entry a random share of time
//! instead: 1 to 128 times the mean cost of one execution. Where costs are
//! even that is the same number of mutants as before; an entry whose
//! mutants cost ten times the mean gets a tenth as many. AFL's performance
//! score weighs entries by execution time for the same reason. LibAFL's own
//! power stage counts iterations from a score of the entry's calibrated
//! time, and its calibration stage runs every new entry four to eight more
//! times; a campaign here adds an entry every twenty or so executions, so
//! the time is measured on the mutants the stage runs anyway.
//!
//! The time is each execution's own (mutation excluded), measured on the
//! host clock, so two campaigns from one `--seed` no longer follow the same
//! path; a campaign's path never was reproducible across cores or time
//! limits, and a finding's reproducer does not depend on it.

use crate::program::ScsiProgram;
use libafl::corpus::HasCurrentCorpusId;
use libafl::fuzzer::Evaluator;
use libafl::mutators::{MutationResult, Mutator};
use libafl::stages::{Restartable, RetryCountRestartHelper, Stage};
use libafl::state::{HasCurrentTestcase, HasRand};
use libafl::Error;
use libafl::HasNamedMetadata;
use libafl_bolts::rands::Rand;
use libafl_bolts::Named;
use std::borrow::Cow;
use std::num::NonZeroUsize;
use std::time::Instant;

/// An entry gets 1 to this many times the mean execution's cost.
pub const MAX_SHARES: NonZeroUsize = NonZeroUsize::new(128).unwrap();

/// Executions the mean cost settles over: a plain mean of the first ones,
/// then a moving average over about this many.
const SETTLE: u32 = 1024;

/// The mean cost of an execution, and the time budget it sets.
#[derive(Debug, Clone, Default)]
pub struct Energy {
    /// Nanoseconds.
    mean_ns: f64,
    /// Executions folded into `mean_ns`, up to [`SETTLE`].
    seen: u32,
}

impl Energy {
    /// Fold one execution's cost into the mean.
    pub fn fold(&mut self, ns: u64) {
        self.seen = (self.seen + 1).min(SETTLE);
        self.mean_ns += (ns as f64 - self.mean_ns) / f64::from(self.seen);
    }

    /// The mean cost of an execution so far, in nanoseconds.
    pub fn mean_ns(&self) -> f64 {
        self.mean_ns
    }

    /// Run `step` until `shares` mean executions' worth of time is spent,
    /// folding each cost in; returns the executions run. `step` mutates and
    /// executes once, returning what the execution cost, or `None` when
    /// the mutator skipped (then nothing ran). At least one execution runs
    /// unless the mutator skips `shares` times in a row, so a fresh stage
    /// (no mean yet) runs one.
    pub fn spend(
        &mut self,
        shares: usize,
        mut step: impl FnMut() -> Result<Option<u64>, Error>,
    ) -> Result<usize, Error> {
        let budget = shares as f64 * self.mean_ns;
        let (mut spent, mut runs, mut skips) = (0.0, 0usize, 0usize);
        loop {
            match step()? {
                Some(ns) => {
                    self.fold(ns);
                    spent += ns as f64;
                    runs += 1;
                    if spent >= budget {
                        return Ok(runs);
                    }
                }
                None => {
                    skips += 1;
                    if skips >= shares {
                        return Ok(runs);
                    }
                }
            }
        }
    }
}

/// A mutational stage whose energy is time, not a count ([`Energy`]).
pub struct TimedMutationalStage<M> {
    mutator: M,
    energy: Energy,
}

impl<M> TimedMutationalStage<M> {
    /// A stage over `mutator` (the havoc stack of domain mutators).
    pub fn new(mutator: M) -> Self {
        TimedMutationalStage {
            mutator,
            energy: Energy::default(),
        }
    }
}

impl<M> Named for TimedMutationalStage<M> {
    fn name(&self) -> &Cow<'static, str> {
        static NAME: Cow<'static, str> = Cow::Borrowed("timed-mutational");
        &NAME
    }
}

/// As LibAFL's own mutational stage, so the stage keeps LibAFL's restart
/// protocol: a client that restarts with its state saved in the middle of
/// this stage runs it again on the same entry, up to [`RETRIES`] runs in
/// all, then skips that entry for good. (Scuzz's executor saves nothing
/// on a panic, which is a Scuzz bug to see: [`crate::campaign::ScsiExecutor`].)
impl<M, S> Restartable<S> for TimedMutationalStage<M>
where
    S: HasNamedMetadata + HasCurrentCorpusId,
{
    fn should_restart(&mut self, state: &mut S) -> Result<bool, Error> {
        RetryCountRestartHelper::should_restart(state, self.name(), RETRIES)
    }
    fn clear_progress(&mut self, state: &mut S) -> Result<(), Error> {
        RetryCountRestartHelper::clear_progress(state, self.name())
    }
}

/// Runs of the stage on one entry, restarts included, before it is skipped.
pub const RETRIES: usize = 3;

impl<E, EM, M, S, Z> Stage<E, EM, S, Z> for TimedMutationalStage<M>
where
    M: Mutator<ScsiProgram, S>,
    S: HasRand + HasCurrentTestcase<ScsiProgram>,
    Z: Evaluator<E, EM, ScsiProgram, S>,
{
    fn perform(
        &mut self,
        fuzzer: &mut Z,
        executor: &mut E,
        state: &mut S,
        manager: &mut EM,
    ) -> Result<(), Error> {
        let shares = 1 + state.rand_mut().below(MAX_SHARES);
        let parent = {
            let mut tc = state.current_testcase_mut()?;
            tc.load_input(state.corpus())?.clone()
        };
        let mutator = &mut self.mutator;
        self.energy.spend(shares, || {
            let mut mutant = parent.clone();
            if mutator.mutate(state, &mut mutant)? == MutationResult::Skipped {
                return Ok(None);
            }
            let t = Instant::now();
            let (_, id) = fuzzer.evaluate_filtered(state, executor, manager, &mutant)?;
            let ns = t.elapsed().as_nanos() as u64;
            mutator.post_exec(state, id)?;
            Ok(Some(ns))
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(mean: u64) -> Energy {
        let mut e = Energy::default();
        for _ in 0..SETTLE {
            e.fold(mean);
        }
        e
    }

    fn runs(e: &mut Energy, shares: usize, cost: u64) -> usize {
        e.spend(shares, || Ok(Some(cost))).unwrap()
    }

    #[test]
    fn an_entry_that_keeps_bringing_the_client_down_is_skipped() {
        use libafl::corpus::{Corpus, InMemoryCorpus, Testcase};
        use libafl::state::{HasCorpus, StdState};
        use libafl_bolts::rands::StdRand;
        let mut s: StdState<
            InMemoryCorpus<ScsiProgram>,
            ScsiProgram,
            StdRand,
            InMemoryCorpus<ScsiProgram>,
        > = StdState::new(
            StdRand::with_seed(1),
            InMemoryCorpus::new(),
            InMemoryCorpus::new(),
            &mut (),
            &mut (),
        )
        .unwrap();
        let a = s
            .corpus_mut()
            .add(Testcase::new(ScsiProgram::new(vec![])))
            .unwrap();
        let b = s
            .corpus_mut()
            .add(Testcase::new(ScsiProgram::new(vec![])))
            .unwrap();
        let mut stage = TimedMutationalStage::new(());
        s.set_corpus_id(a).unwrap();
        // A stage that completes clears its count.
        for _ in 0..10 {
            assert!(stage.should_restart(&mut s).unwrap());
            stage.clear_progress(&mut s).unwrap();
        }
        // Restarted in the middle of the stage (no clear) each time:
        // RETRIES runs in all, then the entry is skipped.
        for _ in 0..RETRIES {
            assert!(stage.should_restart(&mut s).unwrap());
        }
        assert!(!stage.should_restart(&mut s).unwrap());
        stage.clear_progress(&mut s).unwrap();
        assert!(!stage.should_restart(&mut s).unwrap(), "skipped for good");
        stage.clear_progress(&mut s).unwrap();
        s.set_corpus_id(b).unwrap();
        assert!(stage.should_restart(&mut s).unwrap(), "other entries run");
    }

    #[test]
    fn a_fresh_stage_runs_one_mutant() {
        let mut e = Energy::default();
        assert_eq!(runs(&mut e, 100, 5_000), 1);
        assert_eq!(e.mean_ns(), 5_000.0);
    }

    #[test]
    fn entries_get_time_not_a_count() {
        // At the mean cost, `shares` mutants; ten times dearer, a tenth.
        assert_eq!(runs(&mut settled(1_000), 40, 1_000), 40);
        assert_eq!(runs(&mut settled(1_000), 40, 10_000), 4);
        assert_eq!(runs(&mut settled(1_000), 40, 100), 400);
        // One mutant even when it costs more than the whole budget.
        assert_eq!(runs(&mut settled(1_000), 1, 1_000_000), 1);
    }

    #[test]
    fn the_mean_follows_the_costs() {
        let mut e = settled(1_000);
        for _ in 0..(8 * SETTLE) {
            e.fold(3_000);
        }
        assert!((e.mean_ns() - 3_000.0).abs() < 10.0, "{}", e.mean_ns());
    }

    #[test]
    fn a_mutator_that_always_skips_ends_the_stage() {
        let mut e = settled(1_000);
        let mut calls = 0;
        let n = e
            .spend(7, || {
                calls += 1;
                Ok(None)
            })
            .unwrap();
        assert_eq!((n, calls), (0, 7));
    }
}
