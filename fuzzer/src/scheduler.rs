//! Corpus scheduling: LibAFL's minimizer (for every coverage index, favour
//! the entry that reaches it at the least measured cost, [`MeasuredCost`];
//! mostly fuzz the favoured), with a cheaper cull that runs only when the
//! favoured set can have changed.
//!
//! `MinimizerScheduler::next` culls on every call: it walks the whole
//! top-rated table, gathers every favoured entry's coverage indexes into a
//! hash set and boxes a fresh favoured mark into each favoured entry's
//! metadata. Our programs reach thousands of coverage indexes, and once an
//! execution cost tens of microseconds instead of milliseconds that walk
//! was an eighth of a one-core campaign's time. [`CullOnChange`] marks the
//! same entries in the same order, but with a reused bit set for the
//! covered indexes and no new mark on an entry that has one; it skips the
//! walk while no entry was added, replaced or removed since the last one
//! (a cull over an unchanged table marks the same entries again); and as a
//! campaign adds an entry every few picks, it culls a changed table at
//! most once every [`CULL_EVERY`] picks. A new entry waits at most that
//! many picks to be favoured; the queue reaches it, at its end, much
//! later than that anyway.
//!
//! A cull's cost grows with the favoured set: a minute into a campaign
//! from the 32-op programs (28,000 entries, 17,000 coverage entries) one
//! took about 9 ms and culls were an eighth of the campaign. So a cull
//! that took longer than [`CULL_FREE`] holds the next one off for
//! [`CULL_HOLD`] times as long, which keeps culling near a fiftieth of
//! the time however large the corpus grows; cheaper culls (a young
//! campaign's) are held by the pick count alone.

use libafl::corpus::{Corpus, CorpusId, HasTestcase, Testcase};
use libafl::observers::CanTrack;
use libafl::schedulers::minimizer::{
    IsFavoredMetadata, TopRatedsMetadata, DEFAULT_SKIP_NON_FAVORED_PROB,
};
use libafl::schedulers::{MinimizerScheduler, RemovableScheduler, Scheduler, TestcasePenalty};
use libafl::state::{HasCorpus, HasRand};
use libafl::{Error, HasMetadata};
use libafl_bolts::rands::Rand;
use libafl_bolts::serdeany::SerdeAny;
use libafl_bolts::tuples::MatchName;
use libafl_bolts::{AsIter, HasRefCnt};
use std::time::{Duration, Instant};

/// Picks between two culls of a changed table.
pub const CULL_EVERY: u32 = 16;

/// A cull taking this long or longer holds the next one off.
pub const CULL_FREE: Duration = Duration::from_millis(1);

/// How many times its own duration a dear cull holds the next one off.
pub const CULL_HOLD: u32 = 49;

/// A [`MinimizerScheduler`] that culls only after the corpus changed.
#[derive(Debug, Clone)]
pub struct CullOnChange<CS, F, I, M, O> {
    inner: MinimizerScheduler<CS, F, I, M, O>,
    /// An entry was added, replaced or removed since the last cull (and
    /// nothing has been culled yet when the scheduler is new, or restored
    /// with a state after a restart).
    dirty: bool,
    /// Picks since the last cull.
    picks: u32,
    /// Coverage indexes the entries marked so far reach, one bit each:
    /// kept between culls so its memory is reused.
    covered: Vec<u64>,
    /// No cull before this (set after a cull dearer than [`CULL_FREE`]).
    hold_until: Option<Instant>,
}

impl<CS, F, I, M, O> CullOnChange<CS, F, I, M, O> {
    /// Wrap `inner`, built with the default probability of skipping an
    /// entry that is not favoured ([`DEFAULT_SKIP_NON_FAVORED_PROB`], what
    /// `MinimizerScheduler::new` uses).
    pub fn new(inner: MinimizerScheduler<CS, F, I, M, O>) -> Self {
        CullOnChange {
            inner,
            dirty: true,
            picks: CULL_EVERY,
            covered: Vec::new(),
            hold_until: None,
        }
    }
}

impl<CS, F, I, M, O> CullOnChange<CS, F, I, M, O>
where
    M: for<'a> AsIter<'a, Item = usize> + SerdeAny + HasRefCnt,
{
    /// `MinimizerScheduler::cull`: walk the top-rated table in its own
    /// order and mark as favoured each entry that is top-rated for an index
    /// no entry marked before it reaches.
    fn cull<S>(&mut self, state: &mut S) -> Result<(), Error>
    where
        CS: RemovableScheduler<I, S> + Scheduler<I, S>,
        F: TestcasePenalty<I, S>,
        S: HasCorpus<I> + HasMetadata + HasRand,
    {
        loop {
            let Some(top) = state.metadata_map().get::<TopRatedsMetadata>() else {
                return Ok(());
            };
            let covered = &mut self.covered;
            covered.iter_mut().for_each(|w| *w = 0);
            let mut gone = None;
            for (index, id) in &top.map {
                if covered
                    .get(index / 64)
                    .is_some_and(|w| w >> (index % 64) & 1 == 1)
                {
                    continue;
                }
                let entry = match state.corpus().get(*id) {
                    Ok(entry) => entry,
                    // A top-rated entry no longer in the corpus: drop it
                    // from the table and start over, as the minimizer does.
                    Err(Error::KeyNotFound(..)) => {
                        gone = Some(*id);
                        break;
                    }
                    Err(e) => return Err(e),
                };
                let mut entry = entry.borrow_mut();
                let indexes = entry.metadata_map().get::<M>().ok_or_else(|| {
                    Error::key_not_found(format!(
                        "{} needed for the minimizer not found in testcase #{id}",
                        std::any::type_name::<M>()
                    ))
                })?;
                for i in indexes.as_iter() {
                    let i = *i;
                    if covered.len() <= i / 64 {
                        covered.resize(i / 64 + 1, 0);
                    }
                    covered[i / 64] |= 1 << (i % 64);
                }
                if !entry.has_metadata::<IsFavoredMetadata>() {
                    entry.add_metadata(IsFavoredMetadata {});
                }
            }
            match gone {
                Some(id) => self.inner.on_remove(state, id, &None)?,
                None => return Ok(()),
            }
        }
    }
}

impl<CS, F, I, M, O, S> Scheduler<I, S> for CullOnChange<CS, F, I, M, O>
where
    CS: Scheduler<I, S> + RemovableScheduler<I, S>,
    F: TestcasePenalty<I, S>,
    M: for<'a> AsIter<'a, Item = usize> + SerdeAny + HasRefCnt,
    O: CanTrack,
    S: HasCorpus<I> + HasMetadata + HasRand + HasTestcase<I>,
{
    fn on_add(&mut self, state: &mut S, id: CorpusId) -> Result<(), Error> {
        self.dirty = true;
        self.inner.on_add(state, id)
    }

    fn on_evaluation<OT>(&mut self, state: &mut S, input: &I, observers: &OT) -> Result<(), Error>
    where
        OT: MatchName,
    {
        self.inner.on_evaluation(state, input, observers)
    }

    /// What `MinimizerScheduler::next` does, with the cull skipped while
    /// the favoured set cannot have changed, or was culled fewer than
    /// [`CULL_EVERY`] picks ago, or is held off after a dear cull.
    fn next(&mut self, state: &mut S) -> Result<CorpusId, Error> {
        if self.dirty
            && self.picks >= CULL_EVERY
            && self.hold_until.is_none_or(|t| Instant::now() >= t)
        {
            let started = Instant::now();
            self.cull(state)?;
            let took = started.elapsed();
            self.hold_until = (took >= CULL_FREE).then(|| Instant::now() + took * CULL_HOLD);
            self.dirty = false;
            self.picks = 0;
        }
        self.picks = self.picks.saturating_add(1);
        let mut id = self.inner.base_mut().next(state)?;
        while !state
            .corpus()
            .get(id)?
            .borrow()
            .has_metadata::<IsFavoredMetadata>()
            && state.rand_mut().coinflip(DEFAULT_SKIP_NON_FAVORED_PROB)
        {
            id = self.inner.base_mut().next(state)?;
        }
        Ok(id)
    }

    fn set_current_scheduled(
        &mut self,
        state: &mut S,
        next_id: Option<CorpusId>,
    ) -> Result<(), Error> {
        self.inner.set_current_scheduled(state, next_id)
    }
}

impl<CS, F, I, M, O, S> RemovableScheduler<I, S> for CullOnChange<CS, F, I, M, O>
where
    CS: Scheduler<I, S> + RemovableScheduler<I, S>,
    F: TestcasePenalty<I, S>,
    M: for<'a> AsIter<'a, Item = usize> + SerdeAny + HasRefCnt,
    S: HasCorpus<I> + HasMetadata + HasRand + HasTestcase<I>,
{
    fn on_replace(
        &mut self,
        state: &mut S,
        id: CorpusId,
        testcase: &Testcase<I>,
    ) -> Result<(), Error> {
        self.dirty = true;
        self.inner.on_replace(state, id, testcase)
    }

    fn on_remove(
        &mut self,
        state: &mut S,
        id: CorpusId,
        testcase: &Option<Testcase<I>>,
    ) -> Result<(), Error> {
        self.dirty = true;
        self.inner.on_remove(state, id, testcase)
    }
}

/// What one run of an entry cost when it was added, in nanoseconds of the
/// host clock.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct CostMetadata {
    /// Nanoseconds.
    pub ns: u64,
}

libafl_bolts::impl_serdeany!(CostMetadata);

/// The minimiser's penalty: an entry's measured cost ([`CostMetadata`]).
/// An entry without one (never run here) is favoured only where no
/// measured entry reaches the same transition.
#[derive(Debug, Clone, Copy)]
pub struct MeasuredCost;

impl<I, S> TestcasePenalty<I, S> for MeasuredCost {
    fn compute(_state: &S, entry: &mut Testcase<I>) -> Result<f64, Error> {
        Ok(entry
            .metadata::<CostMetadata>()
            .map_or(f64::MAX, |m| m.ns as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libafl::corpus::InMemoryCorpus;
    use libafl::feedbacks::MapIndexesMetadata;
    use libafl::inputs::BytesInput;
    use libafl::observers::StdMapObserver;
    use libafl::schedulers::{
        IndexesLenTimeMinimizerScheduler, MinimizerScheduler, QueueScheduler,
    };
    use libafl::state::StdState;
    use libafl_bolts::rands::StdRand;
    use std::collections::{BTreeMap, BTreeSet};

    type State =
        StdState<InMemoryCorpus<BytesInput>, BytesInput, StdRand, InMemoryCorpus<BytesInput>>;
    type Lazy = CullOnChange<
        QueueScheduler,
        libafl::schedulers::LenTimeMulTestcasePenalty,
        BytesInput,
        MapIndexesMetadata,
        libafl::observers::ExplicitTracking<StdMapObserver<'static, u8, false>, true, false>,
    >;

    fn favoured(s: &State) -> BTreeSet<CorpusId> {
        s.corpus()
            .ids()
            .filter(|id| {
                let t = s.corpus().get(*id).unwrap().borrow();
                t.has_metadata::<IsFavoredMetadata>()
            })
            .collect()
    }

    fn unmark(s: &mut State) {
        for id in s.corpus().ids().collect::<Vec<_>>() {
            let mut t = s.corpus().get(id).unwrap().borrow_mut();
            let _ = t.metadata_map_mut().remove::<IsFavoredMetadata>();
        }
    }

    /// For each transition the cheapest measured entry is favoured; an
    /// entry never measured only where nothing measured reaches.
    #[test]
    fn the_cheapest_measured_entry_is_favoured() {
        let observer = StdMapObserver::owned("cov", vec![0u8; 16]).track_indices();
        let mut sched =
            MinimizerScheduler::<_, MeasuredCost, BytesInput, MapIndexesMetadata, _>::new(
                &observer,
                QueueScheduler::new(),
            );
        let mut s: State = StdState::new(
            StdRand::with_seed(5),
            InMemoryCorpus::new(),
            InMemoryCorpus::new(),
            &mut (),
            &mut (),
        )
        .unwrap();
        // (cost, transitions): the long input is the cheap one, so
        // length plays no part.
        let entries: [(Option<u64>, &[usize], usize); 4] = [
            (Some(9_000), &[1, 2], 4),
            (Some(2_000), &[1], 400),
            (None, &[2, 3], 4),
            (Some(5_000), &[2], 4),
        ];
        let mut ids = Vec::new();
        for (ns, indexes, len) in entries {
            let mut t = Testcase::new(BytesInput::new(vec![0; len]));
            t.add_metadata(MapIndexesMetadata::new(indexes.to_vec()));
            if let Some(ns) = ns {
                t.add_metadata(CostMetadata { ns });
            }
            let id = s.corpus_mut().add(t).unwrap();
            sched.on_add(&mut s, id).unwrap();
            ids.push(id);
        }
        // Who holds each transition is the ranking under test: 1, the
        // 2,000 ns entry; 2, the 5,000 ns one over the unmeasured one;
        // 3, the unmeasured one, the only entry reaching it.
        let top = &s.metadata::<TopRatedsMetadata>().unwrap().map;
        let held: BTreeMap<usize, CorpusId> = top.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(
            held,
            BTreeMap::from([(1, ids[1]), (2, ids[3]), (3, ids[2])])
        );
        // The cull walks LibAFL's hash map in no fixed order and skips a
        // transition an earlier pick already covers: the 5,000 ns entry
        // is favoured only when transition 2 comes before 3. The rest
        // does not depend on the order.
        sched.cull(&mut s).unwrap();
        let marked = favoured(&s);
        assert!(
            marked.contains(&ids[1]) && marked.contains(&ids[2]),
            "{marked:?}"
        );
        assert!(!marked.contains(&ids[0]), "{marked:?}");
    }

    /// Adds and picks as a campaign makes them; [`CULL_EVERY`] picks after
    /// an add, a full LibAFL cull over the same table (same iteration
    /// order) must find nothing left to mark, and from a clean slate both
    /// culls must mark the same entries. Entries mostly come longer than what came before
    /// on the same indexes (not favoured) and sometimes shorter (they take
    /// indexes over), so a cull skipped after an add, or an index set
    /// wrongly in the bit set, shows.
    #[test]
    fn marks_what_the_minimizers_own_cull_marks() {
        let observer = StdMapObserver::owned("cov", vec![0u8; 256]).track_indices();
        let mut lazy: Lazy = CullOnChange::new(IndexesLenTimeMinimizerScheduler::new(
            &observer,
            QueueScheduler::new(),
        ));
        let mut s: State = StdState::new(
            StdRand::with_seed(5),
            InMemoryCorpus::new(),
            InMemoryCorpus::new(),
            &mut (),
            &mut (),
        )
        .unwrap();
        for round in 0..60usize {
            if round % 3 == 0 {
                let len = if round % 9 == 0 { 5 } else { 10 + round };
                let indexes = vec![round % 7, 40 + round % 9, 100 + round % 5, 130 + round % 3];
                let mut t = Testcase::new(BytesInput::new(vec![0; len]));
                t.add_metadata(MapIndexesMetadata::new(indexes));
                let id = s.corpus_mut().add(t).unwrap();
                lazy.on_add(&mut s, id).unwrap();
            }
            for _ in 0..CULL_EVERY {
                let id = lazy.next(&mut s).unwrap();
                lazy.set_current_scheduled(&mut s, Some(id)).unwrap();
            }
            let before = favoured(&s);
            lazy.inner.cull(&mut s).unwrap();
            assert_eq!(favoured(&s), before, "round {round}: a cull was skipped");
        }
        unmark(&mut s);
        lazy.cull(&mut s).unwrap();
        let ours = favoured(&s);
        unmark(&mut s);
        lazy.inner.cull(&mut s).unwrap();
        assert_eq!(ours, favoured(&s));
        assert!(
            !ours.is_empty() && ours.len() < s.corpus().count(),
            "{ours:?}"
        );
    }
}
