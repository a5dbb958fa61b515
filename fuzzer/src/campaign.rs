//! Campaigns: LibAFL's fuzzing loop wired to the emulator, the oracle and
//! the domain mutators.
//!
//! The parts are LibAFL's own: a [`StdState`] holding an on-disk corpus
//! (`OUT/queue`, so a killed campaign resumes) and on-disk solutions
//! (`OUT/solutions`); a [`StdFuzzer`] with a minimiser-over-queue scheduler;
//! [`MaxMapFeedback`] over a [`VariableMapObserver`] of the emulator's
//! state-transition map (densely renumbered and hit counts bucketed as
//! LibAFL's `HitcountsMapObserver` buckets them, [`crate::coverage`]);
//! [`HavocScheduledMutator`] over the domain mutators; and, for several
//! cores, the [`Launcher`] with an LLMP broker. Scuzz adds what is specific
//! to it: an executor that runs a program against a fresh emulator beside the
//! oracle ([`ScsiExecutor`]), a mutational stage that gives each entry a
//! share of time rather than a count of mutants
//! ([`crate::energy::TimedMutationalStage`]), an observer carrying the run's
//! [`Verdict`] ([`OracleObserver`]), an objective that keeps one solution per
//! new signature ([`ViolationFeedback`]), a stage that minimises each new
//! solution and writes it as a finding ([`FindingsStage`]), and a monitor
//! that keeps `OUT/stats.jsonl` ([`CampaignMonitor`]).

use crate::coverage::DenseCoverage;
use crate::findings::{self, FindingsDir};
use crate::harness::{Harness, Target};
use crate::mutators::{domain_mutations, Hints};
use crate::program::{Limits, ScsiProgram};
use crate::queue::{PackedCorpus, StoredAt};
use crate::scheduler::{CostMetadata, CullOnChange, MeasuredCost};
use crate::stats::StatsLine;
use crate::verdict::Verdict;
use libafl::corpus::{Corpus, CorpusId, OnDiskCorpus, Testcase};
use libafl::events::{
    EventConfig, EventFirer, EventReceiver, EventRestarter, HasEventManagerId, Launcher,
    ProgressReporter, SendExiting, SimpleEventManager,
};
use libafl::executors::{Executor, ExitKind, HasObservers};
use libafl::feedback_or;
use libafl::feedbacks::{Feedback, MapIndexesMetadata, MaxMapFeedback, StateInitializer};
use libafl::fuzzer::{Evaluator, Fuzzer, StdFuzzer};
use libafl::monitors::stats::ClientStatsManager;
use libafl::monitors::Monitor;
use libafl::mutators::HavocScheduledMutator;
use libafl::observers::{CanTrack, Observer, VarLenMapObserver, VariableMapObserver};
use libafl::schedulers::{MinimizerScheduler, QueueScheduler};
use libafl::stages::{Restartable, Stage};
use libafl::state::{HasCorpus, HasExecutions, HasSolutions, StdState};
use libafl::HasMetadata;
use libafl_bolts::core_affinity::Cores;
use libafl_bolts::ownedref::OwnedMutSlice;
use libafl_bolts::rands::StdRand;
use libafl_bolts::shmem::{ShMemProvider, StdShMemProvider};
use libafl_bolts::tuples::{tuple_list, Handle, Handled, MatchNameRef, RefIndexable};
use libafl_bolts::{ClientId, Named};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Name of the coverage map observer (and of the coverage statistic).
pub const COVERAGE: &str = "coverage";

/// Why a campaign could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CampaignError {
    /// The output directory already holds a campaign and `--resume` was
    /// not given.
    #[error("{0} already holds a campaign: pass --resume to continue it, or choose another --out")]
    OutExists(PathBuf),
    /// `--resume` on a directory that holds no campaign.
    #[error("--resume: {0} holds no campaign to continue")]
    NothingToResume(PathBuf),
    /// A file or directory of the campaign could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The `--cores` list did not parse.
    #[error("--cores {spec}: {reason}")]
    Cores {
        /// What was given.
        spec: String,
        /// LibAFL's complaint.
        reason: String,
    },
    /// The seeds could not be imported.
    #[error(transparent)]
    Seeds(#[from] crate::seeds::SeedError),
    /// The campaign was asked to stop (Ctrl-C).
    #[error("stopped")]
    Stopped,
    /// LibAFL failed.
    #[error("fuzzing engine: {0}")]
    Engine(String),
    /// The fleet settings (`--broker-listen`, `--remote-broker`) cannot be
    /// used.
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
}

impl From<libafl::Error> for CampaignError {
    fn from(e: libafl::Error) -> Self {
        match e {
            libafl::Error::ShuttingDown => CampaignError::Stopped,
            e => CampaignError::Engine(e.to_string()),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CampaignError + '_ {
    move |source| CampaignError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Everything a campaign needs to know.
#[derive(Debug, Clone)]
pub struct CampaignConfig {
    /// Device, HBA and bugs.
    pub target: Target,
    /// Directory of `.sczt` seed traces.
    pub seeds: Option<PathBuf>,
    /// Output directory.
    pub out: PathBuf,
    /// Cores to fuzz on (`0-1`, `0,2`, `all`), one client each.
    pub cores: String,
    /// How long to fuzz.
    pub duration: Duration,
    /// Continue the campaign in `out` instead of starting a new one.
    pub resume: bool,
    /// Seed of the fuzzer's RNG (client `i` uses `seed + i`).
    pub seed: u64,
    /// LLMP broker port; `None` picks a free one.
    pub broker_port: Option<u16>,
    /// Address the broker listens on: `None` is 127.0.0.1 (this machine
    /// only); `0.0.0.0` or `::` let other machines' brokers link to it
    /// ([`crate::fleet`]).
    pub broker_listen: Option<std::net::IpAddr>,
    /// Another machine's broker to link to (`--remote-broker`), so new
    /// corpus entries flow between the two campaigns ([`crate::fleet`]).
    pub remote_broker: Option<std::net::SocketAddr>,
    /// Print live statistics to stderr.
    pub live: bool,
    /// Stop as soon as this many findings exist (tests and benchmarks).
    pub stop_after_findings: Option<usize>,
    /// Stop as soon as findings attributed to each of these bugs exist:
    /// `BUG` (any class), `BUG/data` (a data-loss or corruption class) or
    /// `BUG/CLASS`.
    pub stop_when_found: Vec<String>,
}

/// The campaign's directory layout.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `OUT`.
    pub root: PathBuf,
}

impl Layout {
    /// The layout under `root`.
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }
    /// `OUT/queue`: the corpus, one directory per client
    /// ([`Layout::client_queue`]).
    pub fn queue(&self) -> PathBuf {
        self.root.join("queue")
    }
    /// `OUT/queue/cN`: what client `N` keeps (what it found and what it
    /// took from the others), as packs ([`crate::queue`]): one
    /// append-only file per session of the client.
    ///
    /// One directory per client, not one shared: clients never wait on
    /// each other's writes (when LibAFL's on-disk corpus had two clients
    /// creating thousands of files a second in one ext4 directory, a
    /// two-core campaign used 11 of its 20 CPU-seconds). The price is that
    /// each client stores its own copy of what it imports (about a
    /// kilobyte an entry, compressed).
    pub fn client_queue(&self, client: usize) -> PathBuf {
        self.queue().join(format!("c{client}"))
    }
    /// `OUT/solutions`: raw (unminimised) solutions.
    pub fn solutions(&self) -> PathBuf {
        self.root.join("solutions")
    }
    /// `OUT/findings`: one directory per signature.
    pub fn findings(&self) -> PathBuf {
        self.root.join("findings")
    }
    /// `OUT/stats.jsonl`: the time series.
    pub fn stats(&self) -> PathBuf {
        self.root.join("stats.jsonl")
    }
    /// `OUT/campaign.json`: how the campaign was started.
    pub fn manifest(&self) -> PathBuf {
        self.root.join("campaign.json")
    }
}

/// `OUT/campaign.json`: what `scuzz triage` and `--resume` need to know.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// HBA preset name.
    pub hba: String,
    /// Bugs switched on (CLI names).
    pub bugs: Vec<String>,
    /// Block size.
    pub block_size: u32,
    /// Capacity in blocks.
    pub capacity_blocks: u64,
    /// Seed of the emulator (power-loss choices).
    pub device_seed: u64,
    /// Longest program (`--max-ops`); campaigns from before the option
    /// had the default.
    #[serde(default = "default_max_ops")]
    pub max_ops: usize,
    /// When the campaign first started (Unix ms).
    pub started_unix_ms: u64,
    /// How many times it was resumed.
    pub resumed: u32,
}

fn default_max_ops() -> usize {
    Limits::MAX_OPS
}

impl Manifest {
    /// Reads `OUT/campaign.json` at `path`; the error names the file (and,
    /// for JSON that does not parse, the line and column).
    pub fn read(path: &Path) -> Result<Manifest, CampaignError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        serde_json::from_str(&text)
            .map_err(|e| CampaignError::Engine(format!("{}: {e}", path.display())))
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Observer, executor, objective

/// Carries the last run's [`Verdict`] from the executor to the objective.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OracleObserver {
    name: Cow<'static, str>,
    verdict: Verdict,
    /// What the run cost, in nanoseconds of the host clock.
    ns: u64,
}

impl OracleObserver {
    /// An empty observer.
    pub fn new() -> OracleObserver {
        OracleObserver {
            name: Cow::Borrowed("oracle"),
            verdict: Verdict::default(),
            ns: 0,
        }
    }

    /// The last run's verdict.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// What the last run cost, in nanoseconds.
    pub fn ns(&self) -> u64 {
        self.ns
    }
}

impl Default for OracleObserver {
    fn default() -> Self {
        Self::new()
    }
}

impl Named for OracleObserver {
    fn name(&self) -> &Cow<'static, str> {
        &self.name
    }
}

impl<I, S> Observer<I, S> for OracleObserver {
    fn pre_exec(&mut self, _state: &mut S, _input: &I) -> Result<(), libafl::Error> {
        self.verdict = Verdict::default();
        Ok(())
    }
}

/// The coverage map observer: hit-count classes over the emulator's
/// entries as [`DenseCoverage`] numbers and buckets them, of which LibAFL
/// sees only the prefix numbered so far.
pub type CoverageObserver = VariableMapObserver<'static, u8>;

/// The observers every Scuzz executor fills: the coverage map (with index
/// tracking, for the minimiser scheduler) and the oracle's verdict.
pub type ScsiObservers = (
    libafl::observers::ExplicitTracking<CoverageObserver, true, false>,
    (OracleObserver, ()),
);

/// The observers, freshly made.
pub fn observers() -> ScsiObservers {
    // The observer reads its usable length through a pointer; a leaked
    // word (one per executor, which lives as long as its client) is valid
    // for as long as anything can read it.
    let len: &'static mut usize = Box::leak(Box::new(0));
    let map = OwnedMutSlice::from(vec![0u8; crate::harness::MAP_SIZE]);
    // SAFETY: `len` points to a live, leaked usize that only this observer
    // uses, and the observer owns `map`; the executor keeps the length
    // within the map ([`ScsiExecutor::run_target`]).
    let map = unsafe { VariableMapObserver::from_mut_slice(COVERAGE, map, len) };
    tuple_list!(
        // Hit counts come bucketed AFL-style (1, 2, 3, 4-7, 8-15, ...; a
        // program that repeats a transition a few more times is not new)
        // from [`DenseCoverage::place`], for the entries a run hit only:
        // LibAFL's `HitcountsMapObserver` would classify the whole map
        // after every run, a fortieth of a minute-old campaign's time.
        map.track_indices(),
        OracleObserver::new()
    )
}

/// Runs each program against a fresh emulator (or a real target) beside
/// the oracle (through [`Harness`]), and fills the observers. No signal handlers or forks: the
/// emulator is safe Rust in this process, so a panic is a Scuzz bug to see,
/// not a target crash to catch.
pub struct ScsiExecutor {
    harness: Harness,
    observers: ScsiObservers,
    /// The last run's coverage entries and counts (kept for its capacity).
    hits: Vec<(u32, u8)>,
}

impl ScsiExecutor {
    /// An executor over `harness`.
    pub fn new(harness: Harness) -> ScsiExecutor {
        ScsiExecutor {
            harness,
            observers: observers(),
            hits: Vec::new(),
        }
    }
}

impl HasObservers for ScsiExecutor {
    type Observers = ScsiObservers;

    fn observers(&self) -> RefIndexable<&Self::Observers, Self::Observers> {
        RefIndexable::from(&self.observers)
    }

    fn observers_mut(&mut self) -> RefIndexable<&mut Self::Observers, Self::Observers> {
        RefIndexable::from(&mut self.observers)
    }
}

impl<EM, S: HasExecutions + HasMetadata, Z> Executor<EM, ScsiProgram, S, Z> for ScsiExecutor {
    fn run_target(
        &mut self,
        _fuzzer: &mut Z,
        state: &mut S,
        _mgr: &mut EM,
        input: &ScsiProgram,
    ) -> Result<ExitKind, libafl::Error> {
        *state.executions_mut() += 1;
        let mut hits = std::mem::take(&mut self.hits);
        hits.clear();
        let started = Instant::now();
        let verdict = self.harness.run_hits(input, &mut |i, c| hits.push((i, c)));
        let ns = started.elapsed().as_nanos() as u64;
        // The map came reset over its usable prefix; entries numbered now
        // lie past it and were never written.
        let dense = state.metadata_or_insert_with(|| DenseCoverage::new(crate::harness::MAP_SIZE));
        let map: &mut CoverageObserver = self.observers.0.as_mut();
        dense.place(&hits, map.map_slice_mut());
        *map.size_mut() = dense.len();
        self.hits = hits;
        if let Some(e) = &verdict.device_error {
            // Not a finding: the target is gone. Stop rather than record
            // every later program as a pass.
            return Err(libafl::Error::illegal_state(format!(
                "the device stopped answering: {e}"
            )));
        }
        self.observers.1 .0.verdict = verdict;
        self.observers.1 .0.ns = ns;
        Ok(ExitKind::Ok)
    }
}

/// Signatures already found, kept in the state so a restarted client
/// remembers them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeenSignatures {
    /// Verdict keys (class × bug path).
    pub keys: HashSet<String>,
}

libafl_bolts::impl_serdeany!(SeenSignatures);

/// The key of a solution, attached to its testcase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViolationMetadata {
    /// The verdict's key.
    pub key: String,
}

libafl_bolts::impl_serdeany!(ViolationMetadata);

/// The [`OracleObserver`] among a run's observers: what the objective and
/// the cost feedback read the run's verdict and cost from.
fn oracle_of<'a, OT: MatchNameRef>(
    observers: &'a OT,
    oracle: &Handle<OracleObserver>,
) -> Result<&'a OracleObserver, libafl::Error> {
    observers
        .get(oracle)
        .ok_or_else(|| libafl::Error::illegal_state("oracle observer missing"))
}

/// Records what a new entry's run cost ([`CostMetadata`]) for the
/// minimiser's penalty ([`MeasuredCost`]); never interesting itself.
pub struct RememberCost {
    oracle: Handle<OracleObserver>,
}

impl RememberCost {
    /// The feedback over `observer`.
    pub fn new(observer: &OracleObserver) -> RememberCost {
        RememberCost {
            oracle: observer.handle(),
        }
    }
}

impl Named for RememberCost {
    fn name(&self) -> &Cow<'static, str> {
        static NAME: Cow<'static, str> = Cow::Borrowed("remember-cost");
        &NAME
    }
}

impl<S> StateInitializer<S> for RememberCost {}

impl<EM, OT: MatchNameRef, S> Feedback<EM, ScsiProgram, OT, S> for RememberCost {
    fn append_metadata(
        &mut self,
        _state: &mut S,
        _manager: &mut EM,
        observers: &OT,
        testcase: &mut Testcase<ScsiProgram>,
    ) -> Result<(), libafl::Error> {
        let obs = oracle_of(observers, &self.oracle)?;
        testcase.add_metadata(CostMetadata { ns: obs.ns() });
        Ok(())
    }
}

/// Objective: a run with an oracle or protocol violation whose key (class
/// × bug path) no earlier solution had, here or on disk (other clients,
/// earlier sessions of a resumed campaign).
pub struct ViolationFeedback {
    oracle: Handle<OracleObserver>,
    findings: PathBuf,
    last_key: Option<String>,
}

impl ViolationFeedback {
    /// The objective over `observer`, consulting `findings` (`OUT/findings`).
    pub fn new(observer: &OracleObserver, findings: PathBuf) -> ViolationFeedback {
        ViolationFeedback {
            oracle: observer.handle(),
            findings,
            last_key: None,
        }
    }
}

impl Named for ViolationFeedback {
    fn name(&self) -> &Cow<'static, str> {
        static NAME: Cow<'static, str> = Cow::Borrowed("ViolationFeedback");
        &NAME
    }
}

impl<S: HasMetadata> StateInitializer<S> for ViolationFeedback {
    fn init_state(&mut self, state: &mut S) -> Result<(), libafl::Error> {
        if !state.has_metadata::<SeenSignatures>() {
            state.add_metadata(SeenSignatures::default());
        }
        Ok(())
    }
}

impl<EM, OT, S> Feedback<EM, ScsiProgram, OT, S> for ViolationFeedback
where
    OT: MatchNameRef,
    S: HasMetadata,
{
    fn is_interesting(
        &mut self,
        state: &mut S,
        _manager: &mut EM,
        _input: &ScsiProgram,
        observers: &OT,
        _exit_kind: &ExitKind,
    ) -> Result<bool, libafl::Error> {
        self.last_key = None;
        let obs = oracle_of(observers, &self.oracle)?;
        let Some(key) = obs.verdict().key() else {
            return Ok(false);
        };
        let seen = state.metadata_mut::<SeenSignatures>()?;
        if seen.keys.contains(&key) {
            return Ok(false);
        }
        // Another client or an earlier session may have found it already.
        for k in findings::keys_on_disk(&self.findings) {
            seen.keys.insert(k);
        }
        if seen.keys.contains(&key) {
            return Ok(false);
        }
        seen.keys.insert(key.clone());
        self.last_key = Some(key);
        Ok(true)
    }

    fn append_metadata(
        &mut self,
        _state: &mut S,
        _manager: &mut EM,
        _observers: &OT,
        testcase: &mut Testcase<ScsiProgram>,
    ) -> Result<(), libafl::Error> {
        if let Some(key) = self.last_key.take() {
            testcase.add_metadata(ViolationMetadata { key });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Findings stage

/// How many solutions the findings stage has processed, kept in the state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FindingsProgress {
    /// Solutions handled so far (solutions are only ever appended).
    pub done: usize,
}

libafl_bolts::impl_serdeany!(FindingsProgress);

/// Minimises every new solution while it keeps its signature and writes it
/// to `OUT/findings/<signature>/` ([`FindingsDir`]).
pub struct FindingsStage {
    harness: Harness,
    dir: FindingsDir,
    live: bool,
}

impl FindingsStage {
    /// A stage minimising with its own harness over `target`.
    pub fn new(target: Target, dir: FindingsDir, live: bool) -> FindingsStage {
        FindingsStage {
            harness: Harness::new(target),
            dir,
            live,
        }
    }
}

impl<S: HasMetadata> Restartable<S> for FindingsStage {
    fn should_restart(&mut self, _state: &mut S) -> Result<bool, libafl::Error> {
        Ok(true)
    }
    fn clear_progress(&mut self, _state: &mut S) -> Result<(), libafl::Error> {
        Ok(())
    }
}

impl<E, EM, S, Z> Stage<E, EM, S, Z> for FindingsStage
where
    S: HasSolutions<ScsiProgram> + HasMetadata,
{
    fn perform(
        &mut self,
        _fuzzer: &mut Z,
        _executor: &mut E,
        state: &mut S,
        _mgr: &mut EM,
    ) -> Result<(), libafl::Error> {
        let total = state.solutions().count();
        let done = state
            .metadata_or_insert_with(FindingsProgress::default)
            .done;
        if done >= total {
            return Ok(());
        }
        for n in done..total {
            let id = state.solutions().nth(n);
            let (program, key) = {
                let mut tc = state.solutions().get(id)?.borrow_mut();
                let key = tc
                    .metadata::<ViolationMetadata>()
                    .ok()
                    .map(|m| m.key.clone());
                (tc.load_input(state.solutions())?.clone(), key)
            };
            match self.dir.record(&mut self.harness, &program, key.as_deref()) {
                Ok(Some(written)) if self.live => {
                    eprintln!("scuzz fuzz: new finding {}", written.display())
                }
                Ok(_) => {}
                Err(e) => eprintln!("scuzz fuzz: could not write a finding: {e}"),
            }
        }
        state.metadata_mut::<FindingsProgress>()?.done = total;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Monitor

/// Writes `OUT/stats.jsonl` (one line a second) and, if asked, a live
/// status line on stderr. In a multi-core campaign it runs in the broker and
/// sees every client's statistics.
pub struct CampaignMonitor {
    layout: Option<Layout>,
    live: bool,
    started: Instant,
    offset_s: f64,
    last: Option<Instant>,
}

impl CampaignMonitor {
    /// A monitor for the campaign in `layout` (none: statistics only in
    /// memory), continuing a time series that already ran `offset_s` seconds.
    pub fn new(layout: Option<Layout>, live: bool, offset_s: f64) -> CampaignMonitor {
        CampaignMonitor {
            layout,
            live,
            started: Instant::now(),
            offset_s,
            last: None,
        }
    }
}

impl Monitor for CampaignMonitor {
    fn display(
        &mut self,
        stats: &mut ClientStatsManager,
        _event: &str,
        _sender: ClientId,
    ) -> Result<(), libafl::Error> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < Duration::from_secs(1))
        {
            return Ok(());
        }
        self.last = Some(now);
        let coverage = stats.edges_coverage();
        let g = stats.global_stats();
        let findings = self.layout.as_ref().map_or(g.objective_size as usize, |l| {
            findings::count_on_disk(&l.findings())
        });
        let line = StatsLine {
            unix_ms: unix_ms(),
            elapsed_s: self.offset_s + now.duration_since(self.started).as_secs_f64(),
            execs: g.total_execs,
            execs_per_sec: g.execs_per_sec,
            corpus: g.corpus_size,
            coverage: coverage.as_ref().map_or(0, |c| c.edges_hit as usize),
            // Out of every entry the emulator can mark: LibAFL's own total
            // is the dense prefix numbered so far (crate::coverage).
            coverage_total: crate::harness::MAP_SIZE,
            findings: findings as u64,
            clients: g.client_stats_count as u64,
        };
        if let Some(l) = &self.layout {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(l.stats())
            {
                let _ = writeln!(f, "{}", serde_json::to_string(&line).unwrap_or_default());
            }
        }
        if self.live {
            eprintln!("{line}");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The client

/// The state of one client.
pub type ScsiState = StdState<PackedCorpus, ScsiProgram, StdRand, OnDiskCorpus<ScsiProgram>>;

/// When a client stops.
#[derive(Debug, Clone)]
pub struct StopRule {
    /// Stop at this instant.
    pub deadline: Instant,
    /// Stop once `OUT/findings` holds this many findings (or, without an
    /// output directory, this client has this many solutions).
    pub findings: Option<usize>,
    /// Stop once findings attributed to each of these bugs exist.
    pub bugs: Vec<String>,
}

impl StopRule {
    /// The rule for `cfg`, starting now.
    pub fn for_config(cfg: &CampaignConfig) -> StopRule {
        StopRule {
            deadline: Instant::now() + cfg.duration,
            findings: cfg.stop_after_findings,
            bugs: cfg.stop_when_found.clone(),
        }
    }

    /// Whether the campaign is over: the deadline has passed or the findings
    /// in `dir` satisfy the rule (what a broker checks, [`crate::fleet`]).
    pub fn reached(&self, dir: &Path) -> bool {
        Instant::now() >= self.deadline || self.satisfied_by(dir)
    }

    /// Whether the findings in `dir` satisfy the rule's finding conditions.
    fn satisfied_by(&self, dir: &Path) -> bool {
        if let Some(n) = self.findings {
            if findings::count_on_disk(dir) >= n {
                return true;
            }
        }
        if !self.bugs.is_empty() {
            let recs = findings::records_on_disk(dir);
            return self.bugs.iter().all(|want| {
                recs.iter()
                    .any(|(_, r)| findings::matches(&r.signature, want))
            });
        }
        false
    }
}

/// What one in-process run did.
#[derive(Debug, Clone)]
pub struct ClientReport {
    /// Programs executed.
    pub execs: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Time to the first solution, if any.
    pub first_finding: Option<Duration>,
    /// Solutions kept (one per new signature).
    pub solutions: usize,
    /// Corpus entries.
    pub corpus: usize,
}

/// The initial programs: seeds, then (on resume) the previous queue,
/// each with where it is stored already, in a pack `corpus` adopts.
fn initial_programs(
    cfg: &CampaignConfig,
    limits: &Limits,
    layout: &Layout,
    corpus: &mut PackedCorpus,
) -> Result<Vec<(ScsiProgram, Option<StoredAt>)>, CampaignError> {
    let mut v = Vec::new();
    if let Some(dir) = &cfg.seeds {
        v.extend(
            crate::seeds::import_dir(dir, limits)?
                .into_iter()
                .map(|p| (p, None)),
        );
    }
    if cfg.resume {
        let queue = findings::load_queue(&layout.queue());
        for d in &queue.damage {
            eprintln!("warning: resuming without what could not be read: {d}");
        }
        let index: Vec<usize> = queue
            .packs
            .into_iter()
            .map(|p| corpus.adopt_pack(p))
            .collect();
        let stored = |o: Option<StoredAt>| o.map(|(pack, slot)| (index[pack], slot));
        v.extend(
            queue
                .programs
                .into_iter()
                .zip(queue.origins.into_iter().map(stored)),
        );
    }
    Ok(v)
}

/// Runs one fuzzing client until `stop`; generic over the event manager so
/// the same code runs alone (bench, tests) and under the [`Launcher`].
pub fn fuzz_client<EM>(
    state: Option<ScsiState>,
    mut mgr: EM,
    client: usize,
    cfg: &CampaignConfig,
    stop: StopRule,
) -> Result<ClientReport, CampaignError>
where
    EM: EventFirer<ScsiProgram, ScsiState>
        + EventRestarter<ScsiState>
        + HasEventManagerId
        + ProgressReporter<ScsiState>
        + EventReceiver<ScsiProgram, ScsiState>
        + SendExiting,
{
    let started = Instant::now();
    let layout = Layout::new(&cfg.out);
    let harness = Harness::new(cfg.target.clone());
    let limits = harness.limits();
    let hints = Hints::new(limits, &cfg.target.preset);
    let mut executor = ScsiExecutor::new(harness);
    let map_feedback = MaxMapFeedback::new(&executor.observers.0);
    let mut feedback = feedback_or!(map_feedback, RememberCost::new(&executor.observers.1 .0));
    let mut objective = ViolationFeedback::new(&executor.observers.1 .0, layout.findings());

    let mut state = match state {
        Some(s) => s,
        None => StdState::new(
            StdRand::with_seed(cfg.seed.wrapping_add(client as u64)),
            // Entries appended to packs, not a file each: see
            // `crate::queue`. The directory is this client's alone.
            PackedCorpus::new(layout.client_queue(client)),
            OnDiskCorpus::new(layout.solutions())?,
            &mut feedback,
            &mut objective,
        )?,
    };
    let scheduler = CullOnChange::new(MinimizerScheduler::<
        _,
        MeasuredCost,
        _,
        MapIndexesMetadata,
        _,
    >::new(&executor.observers.0, QueueScheduler::new()));
    let mut fuzzer = StdFuzzer::new(scheduler, feedback, objective);

    let mutator = HavocScheduledMutator::with_max_stack_pow(domain_mutations(hints), 3);
    let findings_dir = FindingsDir::new(layout.findings(), cfg.target.clone());
    let mut stages = tuple_list!(
        crate::energy::TimedMutationalStage::new(mutator),
        FindingsStage::new(cfg.target.clone(), findings_dir, cfg.live)
    );

    if state.must_load_initial_inputs() {
        let programs = initial_programs(cfg, &limits, &layout, state.corpus_mut())?;
        for (p, stored) in &programs {
            // What a program's evaluation keeps is that program: one already
            // in an earlier session's pack points at its record.
            state.corpus_mut().expect_stored(*stored);
            let kept = fuzzer.evaluate_input(&mut state, &mut executor, &mut mgr, p);
            state.corpus_mut().expect_stored(None);
            kept?;
        }
        // Keep every seed even when it adds no coverage: seeds are the
        // workload the user cares about.
        if state.corpus().count() == 0 {
            for (p, _) in programs.into_iter().take(64) {
                fuzzer.add_input(&mut state, &mut executor, &mut mgr, p)?;
            }
        }
        // No seeds at all: start from random programs.
        let mut n = 0u64;
        while state.corpus().count() < 8 && n < 256 {
            let p = crate::generator::random_program(cfg.seed ^ (n << 32) ^ client as u64, &limits);
            fuzzer.evaluate_input(&mut state, &mut executor, &mut mgr, &p)?;
            n += 1;
        }
        if state.corpus().count() == 0 {
            let p = crate::generator::random_program(cfg.seed, &limits);
            fuzzer.add_input(&mut state, &mut executor, &mut mgr, p)?;
        }
    }

    let mut first_finding = None;
    let mut last_solutions = 0;
    let mut last_check = Instant::now();
    loop {
        mgr.maybe_report_progress(&mut state, Duration::from_secs(1))?;
        fuzzer.fuzz_one(&mut stages, &mut executor, &mut state, &mut mgr)?;
        let solutions = state.solutions().count();
        if first_finding.is_none() && solutions > 0 {
            first_finding = Some(started.elapsed());
        }
        if Instant::now() >= stop.deadline {
            break;
        }
        // Findings are checked on disk when this client adds a solution, and
        // once a second for those other clients write.
        let due = solutions > last_solutions || last_check.elapsed() >= Duration::from_secs(1);
        if (stop.findings.is_some() || !stop.bugs.is_empty()) && due {
            last_solutions = solutions;
            last_check = Instant::now();
            if stop.satisfied_by(&layout.findings()) {
                break;
            }
        }
    }
    mgr.report_progress(&mut state)?;
    let report = ClientReport {
        execs: *state.executions(),
        elapsed: started.elapsed(),
        first_finding,
        solutions: state.solutions().count(),
        corpus: state.corpus().count(),
    };
    mgr.send_exiting()?;
    Ok(report)
}

fn prepare_out(cfg: &CampaignConfig) -> Result<f64, CampaignError> {
    let layout = Layout::new(&cfg.out);
    let manifest_path = layout.manifest();
    let mut offset_s = 0.0;
    if cfg.resume {
        if !manifest_path.is_file() {
            return Err(CampaignError::NothingToResume(cfg.out.clone()));
        }
        let mut m = Manifest::read(&manifest_path)?;
        m.resumed += 1;
        // The bound this session runs under (`--max-ops`, or the
        // campaign's own when not given).
        m.max_ops = cfg.target.max_ops;
        write_manifest(&manifest_path, &m)?;
        offset_s = crate::stats::last_elapsed(&layout.stats());
    } else {
        if manifest_path.exists() {
            return Err(CampaignError::OutExists(cfg.out.clone()));
        }
        std::fs::create_dir_all(&cfg.out).map_err(io(&cfg.out))?;
        let t = &cfg.target;
        let m = Manifest {
            hba: t.preset.name.clone(),
            bugs: t.bugs.iter().map(|b| b.name().to_string()).collect(),
            block_size: t.block_size,
            capacity_blocks: t.capacity_blocks,
            device_seed: t.device_seed,
            max_ops: t.max_ops,
            started_unix_ms: unix_ms(),
            resumed: 0,
        };
        write_manifest(&manifest_path, &m)?;
    }
    for d in [layout.queue(), layout.solutions(), layout.findings()] {
        std::fs::create_dir_all(&d).map_err(io(&d))?;
    }
    Ok(offset_s)
}

fn write_manifest(path: &Path, m: &Manifest) -> Result<(), CampaignError> {
    let bytes = serde_json::to_vec_pretty(m).map_err(|e| CampaignError::Engine(e.to_string()))?;
    libafl_bolts::fs::write_file_atomic(path, &bytes)
        .map_err(|e| CampaignError::Engine(e.to_string()))
}

/// Runs a single-client campaign in this process (no broker, no restarts):
/// what benchmarks and tests use, and `--cores` with one core when
/// `in_process` is asked for.
pub fn run_in_process(cfg: &CampaignConfig) -> Result<ClientReport, CampaignError> {
    let offset = prepare_out(cfg)?;
    let layout = Layout::new(&cfg.out);
    let monitor = CampaignMonitor::new(Some(layout), cfg.live, offset);
    let mgr = SimpleEventManager::new(monitor);
    fuzz_client(None, mgr, 0, cfg, StopRule::for_config(cfg))
}

/// The LLMP configuration: unique, so a client always runs a testcase
/// another client sent before judging it. Clients of one configuration
/// would judge it by the sender's observers instead, and those cannot be
/// compared: each client numbers its coverage entries in the order it
/// first hit them ([`crate::coverage::DenseCoverage`]), so the sender's
/// entry 7 is another transition than the receiver's. Judged that way, an
/// imported entry's novelty was a coin (and the receiver's record of what
/// it had seen took the sender's counts), and a linked machine kept none
/// of the other's seed programs about half the time. Running it costs the
/// receiver one execution per imported entry; it also means a fleet may
/// mix machines fuzzing other bugs or device seeds without trusting them.
fn event_config() -> EventConfig {
    EventConfig::AlwaysUnique
}

/// Runs a campaign on `cfg.cores` through LibAFL's [`Launcher`]: one
/// forked client per core, each under LibAFL's restarting manager, and an
/// LLMP broker in this process tree that shares new corpus entries between
/// them, runs the [`CampaignMonitor`] and, for a fleet, links to other
/// machines' brokers ([`crate::fleet::serve`]).
pub fn launch(cfg: &CampaignConfig) -> Result<(), CampaignError> {
    let cores = Cores::from_cmdline(&cfg.cores).map_err(|e| CampaignError::Cores {
        spec: cfg.cores.clone(),
        reason: e.to_string(),
    })?;
    if cfg.target.device.is_external() {
        // One client: several would write the same LUN behind each other's
        // oracle, and every block one of them did not expect would read as
        // corruption.
        if cores.ids.len() > 1 {
            return Err(CampaignError::Cores {
                spec: cfg.cores.clone(),
                reason: format!(
                    "{} is fuzzed by one client (one core): clients would overwrite each other's blocks on the shared LUN",
                    cfg.target.device.describe()
                ),
            });
        }
        if cfg.remote_broker.is_some() || cfg.broker_listen.is_some() {
            return Err(crate::fleet::FleetError::NoBroker(format!(
                "{} is fuzzed in process, without a broker to link",
                cfg.target.device.describe()
            ))
            .into());
        }
        return run_in_process(cfg).map(|_| ());
    }
    let Some(local_clients) = std::num::NonZeroUsize::new(cores.ids.len()) else {
        return Err(CampaignError::Cores {
            spec: cfg.cores.clone(),
            reason: "no core to fuzz on".into(),
        });
    };
    // Bound before anything forks: a busy port is the user's error to see,
    // and no `free port` can be taken by someone else in between.
    let addrs = crate::fleet::BrokerAddrs::new(
        cfg.broker_listen,
        cfg.broker_port.unwrap_or(0),
        cfg.remote_broker,
    )?;
    let listener = addrs.bind()?;
    let port = listener
        .local_addr()
        .map_err(io(Path::new("broker listener")))?
        .port();
    let mut listener = Some(listener);
    if let Some(remote) = addrs.remote {
        let host = crate::fleet::probe(remote)?;
        if cfg.live {
            eprintln!("scuzz fuzz: linking this machine's broker to {remote} ({host})");
        }
    }
    let offset = prepare_out(cfg)?;
    let layout = Layout::new(&cfg.out);
    let findings_dir = layout.findings();
    let shmem = StdShMemProvider::new()?;
    let monitor = CampaignMonitor::new(Some(layout), cfg.live, offset);
    let stop = StopRule::for_config(cfg);
    let broker_stop = stop.clone();
    let configuration = event_config();
    let me = std::process::id();
    let run_client =
        |state: Option<ScsiState>, mgr, desc: libafl::events::ClientDescription| match fuzz_client(
            state,
            mgr,
            desc.id(),
            cfg,
            stop,
        ) {
            Ok(_) => Ok(()),
            Err(CampaignError::Stopped) => Err(libafl::Error::shutting_down()),
            Err(e) => Err(libafl::Error::unknown(e.to_string())),
        };
    let spawn_mgr = |_launcher: &Launcher<'_, _, CampaignMonitor, StdShMemProvider>,
                     client: Option<libafl::events::ClientDescription>,
                     monitor: Option<CampaignMonitor>| {
        match client {
            // Clients: exactly what `Launcher::launch` sets up.
            Some(client_description) => libafl::events::llmp::setup_restarting_mgr_llmp::<
                _,
                ScsiProgram,
                CampaignMonitor,
                ScsiState,
                _,
            >(
                shmem.clone(),
                configuration,
                None,
                port,
                libafl::events::ManagerKind::Client { client_description },
                None,
                libafl::events::ShouldSaveState::OnRestart,
                tuple_list!(),
            ),
            // The broker: ours (see `fleet`), in a child under LibAFL's
            // restarting manager as `Launcher::launch` runs its own, so
            // Ctrl-C and exit codes behave the same.
            None => {
                let (Some(monitor), Some(listener)) = (monitor, listener.take()) else {
                    return Err(libafl::Error::illegal_state("broker started twice"));
                };
                let remote = addrs.remote;
                let findings_dir = findings_dir.clone();
                let stop = broker_stop.clone();
                let live = cfg.live;
                libafl::events::RestartingMgr::new(shmem.clone()).launch(
                    move |mut restorer, shmem, _core| {
                        let served = crate::fleet::serve::<ScsiProgram, _, _>(
                            shmem,
                            listener,
                            remote,
                            monitor,
                            local_clients,
                            || stop.reached(&findings_dir),
                        );
                        restorer.send_exiting();
                        match served {
                            Ok(t) if live && t.received > 0 => eprintln!(
                                "scuzz fuzz: {} testcases received from other machines' brokers",
                                t.received
                            ),
                            Ok(_) => {}
                            Err(e) => eprintln!("scuzz fuzz: broker: {e}"),
                        }
                        Err(libafl::Error::shutting_down())
                    },
                )
            }
        }
    };
    let result = Launcher::builder()
        .shmem_provider(shmem.clone())
        .configuration(configuration)
        .monitor(monitor)
        .run_client(run_client)
        .cores(&cores)
        .broker_port(port)
        .fork(true)
        .build()
        .launch_with_manager(spawn_mgr);
    if std::process::id() != me {
        // A forked client, the broker or a restarter: its work is done.
        std::process::exit(0);
    }
    match result {
        Ok(()) => Ok(()),
        Err(libafl::Error::ShuttingDown) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The id of a solution in a corpus by position (LibAFL ids are sparse).
pub fn nth_solution<S: HasSolutions<ScsiProgram>>(state: &S, n: usize) -> CorpusId {
    state.solutions().nth(n)
}
