//! Runs every command of `docs/tutorial-dext-corruption.md` and fails if
//! the tool's output drifts from what the tutorial shows.
//!
//! The tutorial's runnable blocks are fenced as ` ```console `: each line
//! starting with `$ ` is a command, run with `sh -c` (stderr merged into
//! stdout) in one scratch directory shared by the whole tutorial, with the
//! freshly built `scuzz` first on `PATH`; the lines up to the next command
//! are its expected output. Blocks fenced ` ```console no-ci ` need what CI
//! does not have (a Mac with the DEXT, real hardware, an initiator) and are
//! skipped; so is every other fence (` ```sh `, ` ```c `).
//!
//! Only genuinely variable text is normalised, by explicit placeholders:
//! - `<TMP>`: the scratch directory's path;
//! - `<SECS>`: the seconds in `after N s` and `in N s` (wall-clock time a
//!   fuzz campaign took).
//!
//! `SCUZZ_BLESS=1 cargo test --test tutorial` rewrites the tutorial's
//! outputs with what the commands print now (normalised the same way), for
//! a maintainer who changed the output on purpose.

use std::path::{Path, PathBuf};
use std::process::Command;

const TUTORIAL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/docs/tutorial-dext-corruption.md"
);

/// One `$ command` and the output the tutorial shows for it.
struct Step {
    command: String,
    expected: Vec<String>,
    /// Line range of the expected output in the file (for blessing).
    lines: std::ops::Range<usize>,
}

fn steps(text: &str) -> Vec<Step> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i].trim_start();
        if !fence.starts_with("```") {
            i += 1;
            continue;
        }
        let info: Vec<&str> = fence.trim_start_matches('`').split_whitespace().collect();
        let runnable = info.first() == Some(&"console") && !info.contains(&"no-ci");
        i += 1;
        let mut cur: Option<Step> = None;
        while i < lines.len() && !lines[i].trim_start().starts_with("```") {
            if runnable {
                if let Some(cmd) = lines[i].strip_prefix("$ ") {
                    out.extend(cur.take());
                    cur = Some(Step {
                        command: cmd.to_string(),
                        expected: Vec::new(),
                        lines: i + 1..i + 1,
                    });
                } else if let Some(s) = cur.as_mut() {
                    s.expected.push(lines[i].to_string());
                    s.lines.end = i + 1;
                }
            }
            i += 1;
        }
        out.extend(cur.take());
        i += 1;
    }
    out
}

/// Replaces the number between `before` and `after` on `line` with
/// `<SECS>`.
fn secs(line: &str, before: &str, after: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(p) = rest.find(before) {
        let (head, tail) = rest.split_at(p + before.len());
        out.push_str(head);
        let n = tail
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(tail.len());
        if n > 0 && tail[n..].starts_with(after) {
            out.push_str("<SECS>");
            rest = &tail[n..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

fn normalise(output: &str, tmp: &Path) -> Vec<String> {
    let t = tmp.display().to_string();
    output
        .lines()
        .map(|l| {
            let l = l.replace(&t, "<TMP>");
            let l = secs(&l, "after ", " s");
            let l = secs(&l, "in ", " s");
            l.trim_end().to_string()
        })
        .collect()
}

/// Without trailing blank lines (a blank line may separate a command's
/// output from the next command).
fn trim(lines: &[String]) -> &[String] {
    let n = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    &lines[..n]
}

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("scuzz-tutorial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn tutorial_output_matches_the_tool() {
    let text = std::fs::read_to_string(TUTORIAL).expect("read the tutorial");
    let steps = steps(&text);
    assert!(
        steps.len() >= 10,
        "only {} runnable commands found",
        steps.len()
    );
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_scuzz"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let tmp = scratch();
    let bless = std::env::var_os("SCUZZ_BLESS").is_some();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut failures = Vec::new();
    // Outputs replaced from the last step up, so earlier ranges stay valid.
    let mut blessed: Vec<(std::ops::Range<usize>, Vec<String>)> = Vec::new();
    for s in &steps {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{} 2>&1", s.command))
            .current_dir(&tmp)
            .env("PATH", &path)
            .env("NO_COLOR", "1")
            .output()
            .unwrap_or_else(|e| panic!("running `{}`: {e}", s.command));
        let got = normalise(&String::from_utf8_lossy(&out.stdout), &tmp);
        if trim(&got) != trim(&s.expected) {
            failures.push(format!(
                "$ {}\n--- tutorial\n{}\n--- tool\n{}",
                s.command,
                s.expected.join("\n"),
                got.join("\n")
            ));
        }
        blessed.push((s.lines.clone(), got));
    }
    let _ = std::fs::remove_dir_all(&tmp);
    if bless {
        for (range, got) in blessed.into_iter().rev() {
            lines.splice(range, got);
        }
        std::fs::write(TUTORIAL, lines.join("\n") + "\n").unwrap();
        return;
    }
    assert!(
        failures.is_empty(),
        "the tutorial no longer matches the tool ({} commands differ; SCUZZ_BLESS=1 rewrites it):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn placeholders_replace_only_variable_text() {
    let t = Path::new("/tmp/x");
    assert_eq!(
        normalise(
            "finding a after 0.3 s, in /tmp/x/out  \nno finding in 15 s (campaign in out)",
            t
        ),
        vec![
            "finding a after <SECS> s, in <TMP>/out",
            "no finding in <SECS> s (campaign in out)"
        ]
    );
    // Numbers not followed by the unit stay.
    assert_eq!(
        normalise("after 3 operations", t),
        vec!["after 3 operations"]
    );
    let s =
        steps("x\n```console\n$ a\none\n\n$ b\n```\n```console no-ci\n$ c\n```\n```sh\n$ d\n```\n");
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].expected, vec!["one", ""]);
    assert!(s[1].expected.is_empty());
}
