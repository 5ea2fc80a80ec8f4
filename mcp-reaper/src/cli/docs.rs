//! Shell completions and manual pages, generated from the command line's
//! definition (`args`), so that they say what `--help` says and cannot
//! fall behind it. `cargo xtask dist` runs the built binary's
//! `completions` and `manpage --dir` to package them.
//!
//! Owns: rendering the completion scripts (clap_complete) and the roff
//! pages (clap_mangen), and writing the pages into the directory it is
//! given. Must never: write anywhere but that directory, or print: the
//! binary prints what it returns.

use std::path::{Path, PathBuf};

use clap::CommandFactory as _;
use clap_complete::Shell;
use clap_mangen::Man;

use super::args::Cli;

/// The name the scripts complete and the top page is named after.
const BIN: &str = "mcp-reaper";

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> Result<String, String> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut script);
    let script =
        String::from_utf8(script).map_err(|e| format!("the {shell} completion script: {e}"))?;
    Ok(match shell {
        Shell::Bash => fix_bash_states(&script),
        _ => script,
    })
}

/// clap_complete's bash script tracks the command typed so far in a state
/// named after the binary with `-` as `__` (`mcp__reaper__subcmd__run`),
/// but names the branch that completes a command's options with `-` as
/// `__subcmd__` (`mcp__subcmd__reaper__subcmd__run`): no branch matches,
/// and nothing after a command completes (clap-rs/clap#6421). This names
/// the branches as the states are named; once clap_complete does so
/// itself there is nothing left to rename.
fn fix_bash_states(script: &str) -> String {
    const SEP: &str = "__subcmd__";
    let branch = format!("{}{SEP}", BIN.replace('-', SEP));
    let state = format!("{}{SEP}", BIN.replace('-', "__"));
    script.replace(&branch, &state)
}

/// The command line as the pages describe it: without clap's `help`
/// command, which needs no page of its own (`--help` is on every page).
fn documented() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// `cmd`'s page, every one naming the release it documents (clap gives
/// a command below the top no version).
fn page_of(cmd: clap::Command) -> Man {
    Man::new(cmd).source(format!("{BIN} {}", env!("CARGO_PKG_VERSION")))
}

/// The top page, mcp-reaper(1), in roff.
pub fn manpage() -> Result<String, String> {
    render(&page_of(documented()))
}

fn render(man: &Man) -> Result<String, String> {
    let mut page = Vec::new();
    man.render(&mut page)
        .map_err(|e| format!("cannot render {}: {e}", man.get_filename()))?;
    String::from_utf8(page).map_err(|e| format!("{}: {e}", man.get_filename()))
}

/// The page of `cmd` and those of all its commands, the parent first.
fn pages(cmd: clap::Command, into: &mut Vec<Man>) {
    let subcommands: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    into.push(page_of(cmd));
    for sub in subcommands {
        pages(sub, into);
    }
}

/// Writes mcp-reaper.1 and one page per command (mcp-reaper-run.1,
/// mcp-reaper-config-check.1, ...) into `dir`, made if missing; returns
/// the paths written, the top page first.
pub fn write_pages(dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut all = Vec::new();
    pages(documented(), &mut all);
    all.iter()
        .map(|man| {
            man.generate_to(dir).map_err(|e| {
                let path = dir.join(man.get_filename());
                format!("cannot write {}: {e}", path.display())
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Every command's path below the top, `["config", "check"]` and so on.
    fn command_paths(cmd: &clap::Command, above: &[String], into: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands() {
            let mut path = above.to_vec();
            path.push(sub.get_name().to_owned());
            command_paths(sub, &path, into);
            into.push(path);
        }
    }

    fn all_commands() -> Vec<Vec<String>> {
        let mut all = Vec::new();
        command_paths(&documented(), &[], &mut all);
        all
    }

    /// What bash offers for the last of `words` (typed after
    /// `mcp-reaper`) once the script is loaded: the script is sourced, and
    /// the function it registers for the binary is called as bash's
    /// programmable completion calls it.
    fn bash_offers(script: &Path, words: &[&str]) -> Vec<String> {
        const DRIVER: &str = r#"
            source "$1" || exit 1
            fn=$(complete -p mcp-reaper | sed -n 's/.*-F \([^ ]*\).*/\1/p')
            [ -n "$fn" ] || exit 2
            COMP_WORDS=(mcp-reaper "${@:2}")
            COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
            "$fn" mcp-reaper "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
            printf '%s\n' "${COMPREPLY[@]}"
        "#;
        let out = std::process::Command::new("bash")
            .args(["-c", DRIVER, "bash"])
            .arg(script)
            .args(words)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{words:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let offered = String::from_utf8(out.stdout).unwrap();
        offered.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn the_bash_script_completes_every_command() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join(BIN);
        std::fs::write(&script, completions(Shell::Bash).unwrap()).unwrap();
        let commands = all_commands();
        let mut parents: Vec<Vec<String>> = vec![Vec::new()];
        parents.extend(commands.iter().filter(|p| p.len() == 1).cloned());
        for parent in parents {
            let mut words: Vec<&str> = parent.iter().map(String::as_str).collect();
            words.push("");
            let offered = bash_offers(&script, &words);
            for child in commands
                .iter()
                .filter(|p| p.len() == parent.len() + 1 && p.starts_with(&parent))
            {
                let name = &child[parent.len()];
                assert!(
                    offered.contains(name),
                    "{parent:?}: no {name} in {offered:?}"
                );
            }
        }
        let offered = bash_offers(&script, &["scan", "--"]);
        assert!(offered.contains(&"--proc-root".to_owned()), "{offered:?}");
        assert!(offered.contains(&"--log-format".to_owned()), "{offered:?}");
        let offered = bash_offers(&script, &["completions", ""]);
        assert!(offered.contains(&"zsh".to_owned()), "{offered:?}");
    }

    #[test]
    fn every_shell_has_a_script() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let script = completions(shell).unwrap();
            assert!(script.contains(BIN), "{shell}");
            assert!(script.contains("config"), "{shell}");
        }
    }

    #[test]
    fn the_top_page_lists_every_command() {
        let page = manpage().unwrap();
        assert!(page.contains("\n.TH mcp-reaper 1 "), "{page}");
        for path in all_commands().iter().filter(|p| p.len() == 1) {
            // roff writes a hyphen as `\-`.
            let named = format!("mcp\\-reaper\\-{}(1)", path[0]);
            assert!(page.contains(&named), "{named} not in\n{page}");
        }
        assert!(page.contains("Exit codes"));
        assert!(!page.contains("mcp\\-reaper\\-help"));
    }

    #[test]
    fn write_pages_writes_one_page_per_command() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("man");
        let written = write_pages(&out).unwrap();
        let mut expected = vec![format!("{BIN}.1")];
        for path in all_commands() {
            expected.push(format!("{BIN}-{}.1", path.join("-")));
        }
        let mut names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names[0], format!("{BIN}.1"), "the top page first");
        names.sort();
        expected.sort();
        assert_eq!(names, expected);
        assert!(names.contains(&"mcp-reaper-config-check.1".to_owned()));
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), expected.len());
        for path in &written {
            assert_eq!(path.parent(), Some(out.as_path()));
            let page = std::fs::read_to_string(path).unwrap();
            assert!(page.contains("\n.TH "), "{}", path.display());
            assert!(
                page.contains(env!("CARGO_PKG_VERSION")),
                "{}",
                path.display()
            );
        }
        let run = std::fs::read_to_string(out.join("mcp-reaper-run.1")).unwrap();
        assert!(run.contains("\\-\\-source"), "run's page has its options");
    }
}
