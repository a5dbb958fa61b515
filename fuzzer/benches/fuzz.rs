//! The fuzzer's benchmark (`cargo bench -p scuzz-fuzzer`, about ten
//! minutes on two cores; results in docs/performance.md, section
//! "fuzzer"). Arguments select parts: `ttff`, `throughput`, `scaling`
//! (default: all).
//!
//! - `ttff`: for every catalogued bug, time to the first finding attributed
//!   to it, over 5 seeds on one core, for the campaign (seeds from
//!   corpus/seeds, coverage feedback, domain mutators) and, in the same run,
//!   for a baseline of random programs with no feedback and no domain
//!   mutators. The baseline gets at most 15 times the campaign's median (at
//!   least 3 s, at most 60 s); "> N s" means it found nothing in N s. What
//!   counts is the corruption a bug causes (a data class; the residual for
//!   `bad-residual`), not side effects any random program hits.
//! - `throughput`: executions per second of 32-op programs on a 64 MiB
//!   disk, harness alone and inside LibAFL's loop.
//! - `scaling`: `--cores 0` against `--cores 0-1` through the Launcher.
//! - `seeds DIR` (not part of the default run): writes the 32-op programs
//!   to DIR as seeds (`scuzz fuzz --seeds DIR`).
//! - `harness [N]` (not part of the default run): the harness alone on N
//!   programs, for profiling.
//! - `loop [SECS [32-op]]` (not part of the default run): LibAFL's loop
//!   alone for SECS seconds from a random start (or from the 32-op
//!   programs as seeds), for profiling.
//! - `harness-dir DIR [N [HBA [BUG]]]` (not part of the default run): the
//!   harness over the programs of a campaign's queue (or the seed traces of
//!   a directory such as corpus/seeds), on preset HBA with
//!   catalogued bug BUG switched on (default `lsi3108`, no bug).
//! - `random N [HBA [BUG]]` (not part of the default run): the harness
//!   over N random programs drawn from the seeds 0..N, the same every run.
//! - `cost DIR [N]` (not part of the default run): each of the first N
//!   programs of a queue (default 400), its shape and what one run of it
//!   costs, a line each, to see how costs spread over a queue.
//!
//! With `HARNESS_DIGEST=1`, the `harness`, `harness-dir` and `random` modes
//! fold the `Debug` text of every verdict into one FNV-1a digest and print
//! it, so two builds can be shown to judge every program identically
//! (`scripts/behaviour-digests` runs them all).
//! `HARNESS_DUMP=1` beside it also prints each verdict to stderr, one line
//! a program, to find the programs two builds judge differently.

/// The allocator the `scuzz` binary runs campaigns with.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use emulator::{Bug, BugSet};
use fuzzer::campaign::{launch, run_in_process, CampaignConfig};
use fuzzer::coverage::DenseCoverage;
use fuzzer::generator::random_program;
use fuzzer::harness::{Harness, Target};
use fuzzer::mutators::Dice;
use fuzzer::program::{Op, OpKind, ScsiProgram, Transfer};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use trace::{HbaPreset, Lba, Segment};

const SEEDS: u64 = 5;

fn preset_for(bug: Bug) -> &'static str {
    match bug {
        // Only reachable when the byte limit did not reach the OS splitter.
        Bug::OversizeTruncate | Bug::OversizeClip => "lsi3108-unsplit",
        _ => "lsi3108",
    }
}

fn target(bug: Option<Bug>, seed: u64) -> Target {
    let mut t = Target::new(HbaPreset::by_name(bug.map_or("lsi3108", preset_for)).unwrap());
    t.bugs = bug.map_or(BugSet::NONE, |b| BugSet::of(&[b]));
    t.device_seed = seed;
    t
}

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scuzz-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn corpus_seeds() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../corpus/seeds")
}

fn config(t: Target, out: PathBuf, secs: u64, seed: u64) -> CampaignConfig {
    CampaignConfig {
        target: t,
        seeds: Some(corpus_seeds()),
        out,
        cores: "0".into(),
        duration: Duration::from_secs(secs),
        resume: false,
        seed,
        broker_port: None,
        broker_listen: None,
        remote_broker: None,
        live: false,
        stop_after_findings: None,
        stop_when_found: Vec::new(),
    }
}

/// The finding that counts for `bug`: the corruption it causes (a data
/// class), or for `bad-residual`, which corrupts nothing, the residual.
/// Side effects that are trivial to hit (a no-op SYNCHRONIZE CACHE also
/// skips its LBA range check) do not count.
fn wanted_class(bug: Bug) -> &'static str {
    match bug {
        Bug::BadResidual => "bad-residual",
        _ => "data",
    }
}

fn counts(bug: Bug, class: &str) -> bool {
    match wanted_class(bug) {
        "data" => fuzzer::findings::is_data_class(class),
        c => c == class,
    }
}

/// Campaign: time until a finding attributed to `bug` is on disk.
fn campaign_ttff(bug: Bug, seed: u64, cap: u64) -> Option<f64> {
    let out = out_dir(&format!("ttff-{}-{seed}", bug.name()));
    let mut cfg = config(target(Some(bug), seed), out.clone(), cap, seed);
    cfg.stop_when_found = vec![format!("{}/{}", bug.name(), wanted_class(bug))];
    let start = Instant::now();
    run_in_process(&cfg).expect("campaign runs");
    let t = start.elapsed().as_secs_f64();
    let want = format!("{}/{}", bug.name(), wanted_class(bug));
    let found = fuzzer::findings::records_on_disk(&out.join("findings"))
        .iter()
        .any(|(_, r)| fuzzer::findings::matches(&r.signature, &want));
    let _ = std::fs::remove_dir_all(&out);
    found.then_some(t)
}

/// Baseline: random programs, no feedback, no mutators; a violation counts
/// when it disappears with the bug off (the same attribution the campaign
/// uses).
fn baseline_ttff(bug: Bug, seed: u64, cap: f64) -> Option<f64> {
    let t = target(Some(bug), seed);
    let mut h = Harness::new(t.clone());
    let mut clean = Harness::new(target(None, seed));
    let limits = h.limits();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < cap {
        let p = random_program(seed.wrapping_mul(0x9e37_79b9) ^ n, &limits);
        n += 1;
        let v = h.run(&p);
        let Some(class) = v
            .violations
            .iter()
            .map(|x| x.class.clone())
            .find(|c| counts(bug, c))
        else {
            continue;
        };
        if !clean.run(&p).violations.iter().any(|x| x.class == class) {
            return Some(start.elapsed().as_secs_f64());
        }
    }
    None
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn ttff() {
    println!("| bug | preset | campaign median (s) | campaign runs (s) | baseline median (s) | speed-up |");
    println!("|---|---|---|---|---|---|");
    for &bug in Bug::ALL {
        let mut camp: Vec<f64> = (0..SEEDS)
            .map(|s| campaign_ttff(bug, s + 1, 60).unwrap_or(f64::INFINITY))
            .collect();
        let runs = camp
            .iter()
            .map(|t| {
                if t.is_finite() {
                    format!("{t:.2}")
                } else {
                    ">60".into()
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let cm = median(&mut camp);
        let cap = if cm.is_finite() {
            (cm * 15.0).clamp(3.0, 60.0)
        } else {
            60.0
        };
        // Once three of five runs miss the cap, the median is past it.
        let mut base: Vec<f64> = Vec::new();
        for s in 0..SEEDS {
            base.push(baseline_ttff(bug, s + 1, cap).unwrap_or(f64::INFINITY));
            if base.iter().filter(|t| t.is_infinite()).count() as u64 > SEEDS / 2 {
                break;
            }
        }
        while (base.len() as u64) < SEEDS {
            base.push(f64::INFINITY);
        }
        let bm = median(&mut base);
        let (bm_s, ratio) = if bm.is_finite() {
            (format!("{bm:.2}"), format!("{:.0}x", bm / cm))
        } else {
            (format!("> {cap:.0}"), format!("> {:.0}x", cap / cm))
        };
        println!(
            "| {} | {} | {cm:.2} | {runs} | {bm_s} | {ratio} |",
            bug.name(),
            preset_for(bug)
        );
    }
}

/// 32-op programs of small transfers (1 to 8 blocks of 512 bytes, as page
/// cache writeback of small files issues), flushes and power losses.
fn programs(limits: &fuzzer::program::Limits) -> Vec<ScsiProgram> {
    let mut d = Dice::new(1);
    (0..64)
        .map(|_| {
            let ops = (0..32)
                .map(|_| {
                    let blocks = 1 + d.below(8) as u32;
                    let lba = d.below(limits.capacity_blocks - 8);
                    let sg = vec![Segment::new(0x10_0000 + d.below(1024) * 4096, blocks * 512)];
                    let t = Transfer {
                        lba: Lba(lba),
                        blocks,
                        fua: d.one_in(8),
                        sg,
                        extra: 0,
                    };
                    match d.below(10) {
                        0..=5 => Op::Write(t),
                        6 | 7 => Op::Read(t),
                        8 => Op::SyncCache {
                            lba: Lba(0),
                            blocks: 0,
                            immed: false,
                        },
                        _ => Op::PowerLoss,
                    }
                })
                .collect();
            let mut p = ScsiProgram::new(ops);
            p.fit(limits);
            p
        })
        .collect()
}

/// An FNV-1a digest of verdicts, when `HARNESS_DIGEST` is set.
struct VerdictDigest {
    hash: Option<u64>,
    /// `HARNESS_DUMP`: each verdict to stderr as well.
    dump: bool,
}

impl VerdictDigest {
    fn from_env() -> Self {
        VerdictDigest {
            hash: std::env::var_os("HARNESS_DIGEST").map(|_| 0xcbf2_9ce4_8422_2325),
            dump: std::env::var_os("HARNESS_DUMP").is_some(),
        }
    }

    fn fold(&mut self, v: &fuzzer::verdict::Verdict) {
        if let Some(h) = &mut self.hash {
            let text = format!("{v:?}");
            if self.dump {
                eprintln!("{text}");
            }
            for b in text.bytes() {
                *h = (*h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        }
    }

    fn print(&self) {
        if let Some(h) = self.hash {
            println!("verdict digest {h:016x}");
        }
    }
}

/// The harness alone on `n` programs: the per-execution floor under any
/// campaign (and a short, repeatable run for `valgrind --tool=callgrind`).
fn harness_alone(n: usize) {
    let mut h = Harness::new(target(None, 0));
    let progs = programs(&h.limits());
    let harness_rate = run_harness(&mut h, &progs, n, |v| assert!(v.passed()));
    println!("| harness alone, 32-op programs, coverage on | {harness_rate:.0} execs/s |");
}

/// Runs `n` programs, cycling through `progs`, the way the campaign's
/// executor does (the hit entries renumbered densely into the map, whose
/// numbered prefix is cleared before each run, as LibAFL's variable-size
/// observer does), folding each verdict into the `HARNESS_DIGEST` digest
/// and handing it to `check`; returns executions per second.
fn run_harness(
    h: &mut Harness,
    progs: &[ScsiProgram],
    n: usize,
    check: impl Fn(&fuzzer::verdict::Verdict),
) -> f64 {
    let mut map = vec![0u8; fuzzer::harness::MAP_SIZE];
    let mut dense = DenseCoverage::new(fuzzer::harness::MAP_SIZE);
    let mut hits = Vec::new();
    let mut digest = VerdictDigest::from_env();
    let start = Instant::now();
    for i in 0..n {
        map[..dense.len()].fill(0);
        hits.clear();
        let v = h.run_hits(&progs[i % progs.len()], &mut |i, c| hits.push((i, c)));
        dense.place(&hits, &mut map);
        check(&v);
        digest.fold(&v);
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    digest.print();
    rate
}

/// The bench's 32-op programs as a seed directory.
fn write_32_op_seeds() -> PathBuf {
    let seeds = out_dir("tp-seeds");
    write_32_op_seeds_to(&seeds);
    seeds
}

fn write_32_op_seeds_to(seeds: &std::path::Path) {
    std::fs::create_dir_all(seeds).unwrap();
    let limits = Harness::new(target(None, 0)).limits();
    for (i, p) in programs(&limits).iter().enumerate() {
        let path = seeds.join(format!("p{i:02}.json"));
        std::fs::write(path, serde_json::to_vec(p).unwrap()).unwrap();
    }
}

fn throughput() {
    harness_alone(40_000);
    // The same 32-op programs as seeds, so the loop's rate is comparable
    // with the harness alone: mutation, feedback and corpus on top.
    let seeds = write_32_op_seeds();
    // Queues are removed only at the end: on a file system without a
    // journal, ext4 skips recently deleted inodes one by one when it
    // creates a file, so deleting one run's queue would slow the next
    // run's corpus writes.
    let mut outs = Vec::new();
    for (what, seed_dir) in [
        ("32-op seeds, --max-ops 32", Some(seeds.clone())),
        ("random start", None),
    ] {
        let out = out_dir(&format!("tp-{}", outs.len()));
        let mut cfg = config(target(None, 0), out.clone(), 15, 1);
        if seed_dir.is_some() {
            cfg.target.max_ops = 32;
        }
        cfg.seeds = seed_dir;
        let r = run_in_process(&cfg).unwrap();
        println!(
            "| LibAFL loop, 1 core, in process, no bug, {what}, 15 s | {:.0} execs/s (corpus {}) |",
            r.execs as f64 / r.elapsed.as_secs_f64(),
            r.corpus
        );
        outs.push(out);
    }
    for d in outs.iter().chain([&seeds]) {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn launched(cores: &str, secs: u64) -> (f64, u64) {
    let out = out_dir(&format!("scale-{cores}"));
    let mut cfg = config(target(None, 0), out.clone(), secs, 1);
    cfg.seeds = None;
    cfg.cores = cores.into();
    launch(&cfg).unwrap();
    let series = fuzzer::stats::read_series(&out.join("stats.jsonl"));
    let last = series.last().cloned().expect("stats written");
    let _ = std::fs::remove_dir_all(&out);
    (last.execs as f64 / last.elapsed_s, last.clients)
}

/// One launch per process: LibAFL's restarting manager marks the process
/// it runs in through the environment, so a second Launcher in the same
/// process would take itself for a restarted client.
fn launched_in_child(cores: &str, secs: u64) -> (f64, u64) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["launch-once", cores, &secs.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let rate = it
        .next()
        .and_then(|x| x.parse().ok())
        .expect("launch-once prints its rate");
    let clients = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    (rate, clients)
}

fn scaling() {
    let (one, c1) = launched_in_child("0", 20);
    let (two, c2) = launched_in_child("0-1", 20);
    println!("| Launcher `--cores 0`, 20 s | {one:.0} execs/s ({c1} client) |");
    println!(
        "| Launcher `--cores 0-1`, 20 s | {two:.0} execs/s ({c2} clients), {:.2}x one core |",
        two / one
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if args.first().map(String::as_str) == Some("launch-once") {
        let secs = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
        let (rate, clients) = launched(&args[1], secs);
        println!("{rate} {clients}");
        return;
    }
    if let Some(mode @ ("harness-dir" | "random")) = args.first().map(String::as_str) {
        // The harness over a campaign's queue or a directory of seed
        // traces (`harness-dir DIR [N [HBA [BUG]]]`: the programs the loop
        // really runs, for profiling), or over N programs drawn at random
        // from fixed seeds (`random N [HBA [BUG]]`: the shapes mutation
        // reaches, high addresses and long SG lists, the same every run).
        let at = usize::from(mode == "harness-dir");
        let mut t = target(None, 0);
        if let Some(hba) = args.get(at + 2) {
            t.preset = HbaPreset::by_name(hba).expect("a known HBA preset");
        }
        if let Some(bug) = args.get(at + 3) {
            t.bugs = BugSet::of(&[bug.parse::<Bug>().expect("a catalogued bug")]);
        }
        let mut h = Harness::new(t);
        let limits = h.limits();
        let (what, progs) = if mode == "random" {
            let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
            let progs: Vec<_> = (0..n).map(|i| random_program(i, &limits)).collect();
            ("random programs".to_string(), progs)
        } else {
            let dir = PathBuf::from(args.get(1).expect("harness-dir DIR [N [HBA [BUG]]]"));
            let mut progs = fuzzer::findings::load_programs(&dir);
            if progs.is_empty() {
                progs = fuzzer::seeds::import_dir(&dir, &limits)
                    .unwrap_or_else(|e| panic!("{}: no queue, and no seeds: {e}", dir.display()));
            }
            assert!(!progs.is_empty(), "no programs in {}", dir.display());
            (dir.display().to_string(), progs)
        };
        let n = args
            .get(at + 1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000);
        let rate = run_harness(&mut h, &progs, n, |_| {});
        println!(
            "| harness over {what} ({} programs) | {rate:.0} execs/s |",
            progs.len()
        );
        return;
    }
    if args.first().map(String::as_str) == Some("cost") {
        // What each program of a queue costs, beside its shape, to see how
        // costs spread (`cost DIR [N]`; docs/performance.md, ninth pass).
        let dir = PathBuf::from(args.get(1).expect("cost DIR [N]"));
        let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(400);
        let mut h = Harness::new(target(None, 0));
        let progs = fuzzer::findings::load_programs(&dir);
        let mut hits = Vec::new();
        println!("ops transfers blocks sg_entries power_losses_and_resets flushes ns");
        for p in progs.iter().take(n) {
            // The best of three rounds of five runs.
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                for _ in 0..5 {
                    hits.clear();
                    h.run_hits(p, &mut |i, c| hits.push((i, c)));
                }
                best = best.min(t.elapsed().as_secs_f64() / 5.0);
            }
            let (mut transfers, mut blocks, mut sg) = (0, 0u64, 0);
            for t in p.ops.iter().filter_map(Op::transfer) {
                transfers += 1;
                blocks += u64::from(t.blocks);
                sg += t.sg.len();
            }
            let cuts = p.count(OpKind::PowerLoss) + p.count(OpKind::Reset);
            let flushes = p.count(OpKind::SyncCache);
            println!(
                "{} {transfers} {blocks} {sg} {cuts} {flushes} {:.0}",
                p.ops.len(),
                best * 1e9
            );
        }
        return;
    }
    if args.first().map(String::as_str) == Some("loop") {
        // LibAFL's loop alone, from a random start or from the 32-op
        // programs (for profiling: `loop [SECS [32-op]]`).
        let secs = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(15);
        let from_32 = args.get(2).map(String::as_str) == Some("32-op");
        let out = out_dir("loop");
        let mut cfg = config(target(None, 0), out.clone(), secs, 1);
        cfg.seeds = from_32.then(write_32_op_seeds);
        if from_32 {
            // 32-op programs stay 32-op programs: unbounded, a queue grown
            // from them drifts to a median of 42 ops.
            cfg.target.max_ops = 32;
        }
        let r = run_in_process(&cfg).unwrap();
        if let Some(d) = &cfg.seeds {
            let _ = std::fs::remove_dir_all(d);
        }
        let start = if from_32 {
            "32-op seeds, --max-ops 32"
        } else {
            "random start"
        };
        println!(
            "| LibAFL loop, 1 core, {start}, {secs} s | {:.0} execs/s ({} execs, corpus {}) |",
            r.execs as f64 / r.elapsed.as_secs_f64(),
            r.execs,
            r.corpus
        );
        let _ = std::fs::remove_dir_all(&out);
        return;
    }
    if let (Some("seeds"), Some(dir)) = (args.first().map(String::as_str), args.get(1)) {
        write_32_op_seeds_to(std::path::Path::new(dir));
        return;
    }
    if args.first().map(String::as_str) == Some("harness") {
        let n = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(40_000);
        harness_alone(n);
        return;
    }
    let want = |p: &str| args.is_empty() || args.iter().any(|a| a == p);
    if want("throughput") {
        throughput();
    }
    if want("scaling") {
        scaling();
    }
    if want("ttff") {
        ttff();
    }
}
