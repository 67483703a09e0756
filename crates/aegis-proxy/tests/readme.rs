//! The README's simulation figures are the program's output: each `aegis-proxy simulate ...`
//! command printed there is run from the repository root (a fresh clone has everything it
//! reads, in `data/carbon`), and what it prints must be the text that follows it.

use std::path::Path;
use std::process::Command;

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
