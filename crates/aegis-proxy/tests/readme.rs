//! The README's simulation figures are the program's output: each `aegis-proxy simulate ...`
//! command printed there is run from the repository root (a fresh clone has everything it
//! reads, in `data/carbon`), and what it prints must be the text that follows it.

mod support;

use std::path::Path;
use std::process::Command;

use support::process::KillOnDrop;

const BIN: &str = env!("CARGO_BIN_EXE_aegis-proxy");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Every `` `aegis-proxy simulate ...` `` line alone on its own line, with the block printed
/// after it (up to the next blank line after the table).
fn documented_runs(readme: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut runs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(command) = line
            .strip_prefix("`aegis-proxy simulate ")
            .and_then(|rest| rest.strip_suffix('`'))
        else {
            continue;
        };
        // A blank line, the settings line, a blank line, then the table.
        let mut block = Vec::new();
        let mut blanks = 0;
        for next in &lines[i + 1..] {
            if next.is_empty() {
                blanks += 1;
                if blanks == 3 {
                    break;
                }
                if blanks > 1 {
                    block.push("");
                }
                continue;
            }
            block.push(next);
        }
        runs.push((command.to_owned(), format!("{}\n", block.join("\n"))));
    }
    runs
}

#[test]
fn the_readme_simulations_print_what_the_readme_says() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let runs = documented_runs(&readme);
    assert!(runs.len() >= 4, "found {} simulate commands", runs.len());
    for (arguments, expected) in runs {
        let output = Command::new(BIN)
            .arg("simulate")
            .args(arguments.split_whitespace())
            .current_dir(ROOT)
            .output()
            .unwrap();
        assert!(output.status.success(), "{arguments}: {output:?}");
        let printed = String::from_utf8(output.stdout).unwrap();
        assert_eq!(printed, expected, "aegis-proxy simulate {arguments}");
    }
}

#[test]
fn the_chart_is_written_where_asked() {
    let dir = std::env::temp_dir().join(format!("aegis-readme-svg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("year.svg");
    let output = Command::new(BIN)
        .args([
            "simulate",
            "--trace",
            "data/carbon/combined_2023_hourly_lca.csv",
        ])
        .args([
            "--regions",
            "DE=1,NO=33",
            "--policy",
            "greenest",
            "--format",
            "json",
        ])
        .arg("--svg")
        .arg(&svg)
        .current_dir(ROOT)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["policies"][0]["policy"], "greenest");
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("Region chosen by greenest"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The `validate` example is what `validate` prints for the file it names.
#[test]
fn the_readme_validate_example_is_what_validate_prints() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let command = "`aegis-proxy validate --config examples/broken.toml`";
    let after = &readme[readme.find(command).expect("the validate example")..];
    let block = &after[after.find("```text\n").unwrap() + 8..];
    let expected = &block[..block.find("```").unwrap()];
    let output = Command::new(BIN)
        .args(["validate", "--config", "examples/broken.toml"])
        .current_dir(ROOT)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(String::from_utf8(output.stderr).unwrap(), expected);
}

/// The "Checking that a connection was post-quantum" commands, run against the demo as the
/// README says (its address and CA folder put in), print what the README says they print;
/// so do the probe commands the demo itself prints.
#[test]
fn the_readme_post_quantum_checks_work_against_the_demo() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let section = &readme[readme
        .find("## Checking that a connection was post-quantum")
        .unwrap()..];
    let section = &section[..section[3..].find("\n## ").unwrap()];
    let probes: Vec<&str> = section
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("aegis-proxy probe "))
        .collect();
    assert_eq!(probes.len(), 3, "{section}");
    let metrics_check = section
        .split('`')
        .find(|s| s.starts_with("curl -s http://127.0.0.1:9901/metrics"))
        .expect("the metrics check");

    let mut demo = KillOnDrop::new(
        Command::new(BIN)
            .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let folder = std::env::temp_dir().join(format!("aegis-demo-{}", demo.id()));
    let instructions = demo_instructions(&mut demo);
    let https = between(&instructions, "behind https://", " ");
    let admin = between(&instructions, "Admin: http://", "/");
    let folder = folder.display().to_string();
    let run = |line: &str| {
        let line = line
            .split("   #")
            .next()
            .unwrap()
            .replace("localhost:8443", &https)
            .replace("/tmp/aegis-demo-PID", &folder)
            .replace("127.0.0.1:9901", &admin);
        let out = Command::new("sh")
            .args(["-c", &line.replacen("aegis-proxy ", &format!("{BIN} "), 1)])
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{line}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    for probe in &probes {
        let group = if probe.contains("--classical") {
            "group: X25519 (classical)"
        } else {
            "group: X25519MLKEM768 (post-quantum hybrid)"
        };
        let printed = run(probe);
        assert!(printed.lines().any(|l| l == group), "{probe}: {printed}");
        assert!(printed.contains("status: 200"), "{probe}: {printed}");
    }
    let printed = run(metrics_check);
    assert!(printed.contains("group=\"X25519MLKEM768\""), "{printed}");
    assert!(printed.contains("group=\"X25519\""), "{printed}");
    for line in instructions
        .lines()
        .map(str::trim)
        .filter(|l| l.contains(" probe https://"))
    {
        let out = Command::new("sh").args(["-c", line]).output().unwrap();
        let printed = String::from_utf8(out.stdout).unwrap();
        assert!(
            printed.contains("group: X25519MLKEM768"),
            "{line}: {printed}"
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &demo.id().to_string()])
        .status();
    demo.wait().unwrap();
}

/// The demo's stderr up to the end of its instructions.
fn demo_instructions(demo: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let stderr = demo.stderr.take().unwrap();
    let mut text = String::new();
    let mut lines = std::io::BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        text.push_str(&line);
        text.push('\n');
        if line.contains("Ctrl-C drains and exits") {
            // Keep reading, so that the demo's log lines still have a reader.
            std::thread::spawn(move || lines.for_each(drop));
            return text;
        }
    }
    panic!("the demo exited before its instructions:\n{text}");
}

fn between(text: &str, start: &str, end: &str) -> String {
    let rest = &text[text
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in {text}"))
        + start.len()..];
    rest[..rest.find(end).unwrap()].to_owned()
}
