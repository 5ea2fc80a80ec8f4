//! A command's answer on stdout and its messages on stderr.
//!
//! Owns: what a write that fails means. A reader that went away (EPIPE:
//! `mcp-reaper scan --json | head -1` once `head` has exited) ends the
//! output and is not an error: the command exits as it would have. Any
//! other failure of stdout (a full disk, say) is reported on stderr.
//! Must never: panic on a closed or failing stream, as `println!` does.

use std::io::{self, Write};

use serde::Serialize;

/// Writes `text` to stdout and flushes it. `Ok` also when the reader went
/// away; `Err` says why the answer could not be written otherwise.
pub fn print(text: &str) -> Result<(), String> {
    write_answer(&mut io::stdout().lock(), text)
}

/// `value` as indented JSON and a newline, as [`print`] writes.
pub fn print_json<T: Serialize>(value: &T) -> Result<(), String> {
    let mut text =
        serde_json::to_string_pretty(value).map_err(|e| format!("cannot encode: {e}"))?;
    text.push('\n');
    print(&text)
}

/// Writes `text` to stderr as it can: a failure there has nowhere left to
/// be reported, and is ignored.
pub fn say(text: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// Writes and flushes `text` to `w`; a broken pipe is a normal end.
fn write_answer(w: &mut impl Write, text: &str) -> Result<(), String> {
    match w.write_all(text.as_bytes()).and_then(|()| w.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("cannot write the output: {e}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A writer that fails every write with `kind`.
    struct Failing(io::ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(self.0))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reader_gone_ends_the_output_and_other_failures_are_errors() {
        let mut v = Vec::new();
        assert_eq!(write_answer(&mut v, "a\n"), Ok(()));
        assert_eq!(v, b"a\n");
        assert_eq!(
            write_answer(&mut Failing(io::ErrorKind::BrokenPipe), "a"),
            Ok(())
        );
        let e = write_answer(&mut Failing(io::ErrorKind::StorageFull), "a").unwrap_err();
        assert!(e.starts_with("cannot write the output"), "{e}");
    }
}
