//! Corpus scheduling: LibAFL's minimizer (for every coverage index, favour
//! the smallest, fastest entry that reaches it; mostly fuzz the favoured),
//! with a cheaper cull that runs only when the favoured set can have
//! changed.
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

use libafl::corpus::{Corpus, CorpusId, HasTestcase, Testcase};
use libafl::feedbacks::{Feedback, StateInitializer};
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
use libafl_bolts::{HasLen, Named};
use std::borrow::Cow;

/// Picks between two culls of a changed table.
pub const CULL_EVERY: u32 = 16;

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
    /// [`CULL_EVERY`] picks ago.
    fn next(&mut self, state: &mut S) -> Result<CorpusId, Error> {
        if self.dirty && self.picks >= CULL_EVERY {
            self.cull(state)?;
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

/// Feeds the minimiser a new entry's length while the entry still holds
/// its input.
///
/// The minimiser scores a new entry by length times execution time, but
/// LibAFL's on-disk corpus drops an entry's input as soon as it has saved
/// it, before the scheduler hears of the entry: scoring then read the file
/// back and parsed it, a second decode of every new entry (the first is
/// when the entry is fuzzed), about a twentieth of an early campaign.
/// Feedbacks see the entry before it is saved; this one, never
/// interesting itself, asks the testcase for its length there, which the
/// testcase keeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct RememberLen;

impl Named for RememberLen {
    fn name(&self) -> &Cow<'static, str> {
        static NAME: Cow<'static, str> = Cow::Borrowed("remember-len");
        &NAME
    }
}

impl<S> StateInitializer<S> for RememberLen {}

impl<EM, I, OT, S> Feedback<EM, I, OT, S> for RememberLen
where
    I: HasLen,
    S: HasCorpus<I>,
{
    fn append_metadata(
        &mut self,
        state: &mut S,
        _manager: &mut EM,
        _observers: &OT,
        testcase: &mut Testcase<I>,
    ) -> Result<(), Error> {
        testcase.load_len(state.corpus())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libafl::corpus::InMemoryCorpus;
    use libafl::feedbacks::MapIndexesMetadata;
    use libafl::inputs::BytesInput;
    use libafl::observers::StdMapObserver;
    use libafl::schedulers::{IndexesLenTimeMinimizerScheduler, QueueScheduler};
    use libafl::state::StdState;
    use libafl_bolts::rands::StdRand;
    use std::collections::BTreeSet;

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

    /// The on-disk corpus drops a new entry's input once saved; with its
    /// length remembered, scoring it needs no file at all.
    #[test]
    fn a_remembered_length_needs_no_reload() {
        use libafl::corpus::InMemoryOnDiskCorpus;
        let dir = std::env::temp_dir().join(format!("scuzz-remember-len-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        type DiskState = StdState<
            InMemoryOnDiskCorpus<BytesInput>,
            BytesInput,
            StdRand,
            InMemoryCorpus<BytesInput>,
        >;
        let mut s: DiskState = StdState::new(
            StdRand::with_seed(5),
            InMemoryOnDiskCorpus::no_meta(&dir).unwrap(),
            InMemoryCorpus::new(),
            &mut (),
            &mut (),
        )
        .unwrap();
        let mut t = Testcase::new(BytesInput::new(vec![0; 37]));
        Feedback::<(), BytesInput, (), DiskState>::append_metadata(
            &mut RememberLen,
            &mut s,
            &mut (),
            &(),
            &mut t,
        )
        .unwrap();
        let id = s.corpus_mut().add(t).unwrap();
        // Gone from disk: a reload would fail.
        std::fs::remove_dir_all(&dir).unwrap();
        let mut t = s.corpus().get(id).unwrap().borrow_mut();
        assert!(t.input().is_none(), "the corpus dropped the input");
        assert_eq!(t.load_len(s.corpus()).unwrap(), 37);
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
