//! The manual pages and shell completions a release ships, made by the
//! binary `dist` built and checked (`mcp-reaper manpage --dir`,
//! `mcp-reaper completions SHELL`): xtask cannot link the daemon's
//! library cheaply (its build script builds the kernel programs), and the
//! binary's own output is what an operator would get from it.
//!
//! Owns: the names and layout of the generated files (`man/*.1.gz`,
//! `completions/`) and compressing the pages (`gzip -9n`, as Debian policy
//! asks: best compression, no name or time stamp). Must never: write
//! outside the directory it is given.
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::cmd::Cmd;

/// Under the directory given: the compressed pages, and the scripts.
pub const MAN_SUBDIR: &str = "man";
pub const COMPLETIONS_SUBDIR: &str = "completions";
/// The top page, compressed; every command has one beside it.
pub const TOP_PAGE: &str = "mcp-reaper.1.gz";
/// The scripts' file names, as each shell's completion directory wants
/// them.
pub const BASH: &str = "mcp-reaper.bash";
pub const ZSH: &str = "_mcp-reaper";
pub const FISH: &str = "mcp-reaper.fish";
/// The shells packaged: (the binary's name for it, file name).
const SHELLS: [(&str, &str); 3] = [("bash", BASH), ("zsh", ZSH), ("fish", FISH)];

/// Where the generated files are.
pub struct Generated {
    /// Every command's page, `*.1.gz`.
    pub man: PathBuf,
    /// The scripts named as in [`SHELLS`].
    pub completions: PathBuf,
}

/// Runs `binary` to write the pages and the scripts under `into`,
/// replacing what an earlier run left there.
pub fn generate(binary: &Path, into: &Path) -> Result<Generated> {
    generate_with(&[binary.as_os_str()], into)
}

/// [`generate`], with `program` the command line that runs the binary.
fn generate_with(program: &[&OsStr], into: &Path) -> Result<Generated> {
    let generated = Generated {
        man: into.join(MAN_SUBDIR),
        completions: into.join(COMPLETIONS_SUBDIR),
    };
    for dir in [&generated.man, &generated.completions] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
        }
    }
    write_pages(program, &generated.man)?;
    fs::create_dir_all(&generated.completions)
        .with_context(|| format!("create {}", generated.completions.display()))?;
    for (shell, file) in SHELLS {
        let script = run(program, &["completions".as_ref(), shell.as_ref()])?;
        if script.is_empty() {
            bail!("`completions {shell}` printed nothing");
        }
        let path = generated.completions.join(file);
        fs::write(&path, format!("{script}\n"))
            .with_context(|| format!("write {}", path.display()))?;
    }
    println!(
        "dist: manual pages in {}, completions in {}",
        generated.man.display(),
        generated.completions.display()
    );
    Ok(generated)
}

/// `program args`, its trimmed stdout.
fn run(program: &[&OsStr], args: &[&OsStr]) -> Result<String> {
    let (first, rest) = program.split_first().context("no program to run")?;
    Cmd::new(first).args(rest).args(args).stdout()
}

/// `manpage --dir man`, then `gzip -9n` of each page it says it wrote.
fn write_pages(program: &[&OsStr], man: &Path) -> Result<()> {
    let args = ["manpage".as_ref(), "--dir".as_ref(), man.as_os_str()];
    let listed = run(program, &args)?;
    let pages: Vec<PathBuf> = listed.lines().map(PathBuf::from).collect();
    if pages.is_empty() {
        bail!("`manpage --dir {}` listed no page", man.display());
    }
    if let Some(stray) = pages.iter().find(|p| p.parent() != Some(man)) {
        bail!(
            "`manpage --dir {}` wrote {} elsewhere",
            man.display(),
            stray.display()
        );
    }
    Cmd::new("gzip").args(["-9n", "--"]).args(&pages).run()?;
    if !man.join(TOP_PAGE).is_file() {
        bail!("no {TOP_PAGE} among the pages in {}", man.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for the binary: two pages, and a line naming the shell.
    const FAKE: &str = r##"
case "$1" in
manpage) mkdir -p "$3"
         printf '.TH mcp-reaper 1\n' > "$3/mcp-reaper.1"
         printf '.TH mcp-reaper-run 1\n' > "$3/mcp-reaper-run.1"
         printf '%s\n' "$3/mcp-reaper.1" "$3/mcp-reaper-run.1" ;;
completions) echo "# $2" ;;
esac
"##;

    #[test]
    fn pages_are_compressed_and_scripts_named_for_their_shells() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let fake = dir.path().join("fake.sh");
        fs::write(&fake, FAKE)?;
        let into = dir.path().join("deb");
        fs::create_dir_all(into.join(MAN_SUBDIR))?;
        fs::write(into.join(MAN_SUBDIR).join("stale.1.gz"), "")?;
        let program = [OsStr::new("sh"), fake.as_os_str()];
        let generated = generate_with(&program, &into)?;
        let mut pages: Vec<String> = fs::read_dir(&generated.man)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        pages.sort();
        assert_eq!(pages, ["mcp-reaper-run.1.gz", TOP_PAGE], "stale pages go");
        let page = Cmd::new("gzip")
            .args(["-dc".as_ref(), generated.man.join(TOP_PAGE).as_os_str()])
            .stdout()?;
        assert_eq!(page, ".TH mcp-reaper 1");
        for (shell, file) in SHELLS {
            let script = fs::read_to_string(generated.completions.join(file))?;
            assert_eq!(script, format!("# {shell}\n"));
        }
        Ok(())
    }
}
