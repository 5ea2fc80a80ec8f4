//! Sizes in bytes as operators write them: "4096", "512 KiB", "64MiB",
//! "1 GiB". No crate: the grammar is this small.
//!
//! Owns: parsing and formatting byte sizes (formatting gives back text
//! that parses to the same value, in the largest binary unit that divides
//! it exactly).
//! Must never: accept a fraction, a sign, a decimal unit (kB, MB: a
//! thousand or 1024 is exactly the doubt this avoids) or a size past
//! `u64`, or panic on any input.

/// The units read and written, largest first.
const UNITS: [(&str, u64); 4] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

/// Parses a number of bytes with an optional binary unit (B, KiB, MiB,
/// GiB, in any case), with or without a space: "4096", "64MiB", "1 GiB".
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid size {text:?}: expected a whole number of bytes, optionally with a unit \
             (B, KiB, MiB, GiB), e.g. \"4096\", \"256KiB\", \"64MiB\""
        )
    };
    let s = text.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let (num, unit) = s.split_at(digits);
    let unit = unit.trim_start();
    let per = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(unit))
            .map(|&(_, per)| per)
            .ok_or_else(bad)?
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(per)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Formats `bytes` the way [`parse_bytes`] reads it: "64 MiB", "1 GiB",
/// "4097 B".
#[must_use]
pub fn format_bytes(bytes: u64) -> String {
    let (name, per) = UNITS
        .iter()
        .find(|&&(_, per)| bytes != 0 && bytes.is_multiple_of(per))
        .copied()
        .unwrap_or(("B", 1));
    format!("{} {name}", bytes / per)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (text, want) in [
            ("4096", 4096),
            ("0", 0),
            ("7 B", 7),
            ("256KiB", 256 << 10),
            ("64MiB", 64 << 20),
            ("64 MiB", 64 << 20),
            ("64mib", 64 << 20),
            (" 1 GiB ", 1 << 30),
        ] {
            assert_eq!(parse_bytes(text), Ok(want), "{text}");
        }
        for bad in [
            "", "MiB", "-1", "1.5MiB", "64 MB", "64M", "64 kB", "1 TiB", "64MiBs", "1 2",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert!(parse_bytes("99999999999999999999").is_err());
        assert!(parse_bytes("17179869184 GiB").is_err(), "past u64");
    }

    #[test]
    fn formatted_sizes_read_back() {
        assert_eq!(format_bytes(64 << 20), "64 MiB");
        assert_eq!(format_bytes(1 << 20), "1 MiB");
        assert_eq!(format_bytes(1536 << 10), "1536 KiB");
        assert_eq!(format_bytes(4097), "4097 B");
        assert_eq!(format_bytes(0), "0 B");
        for n in [0, 1, 4096, 4097, 1 << 20, 3 << 30, u64::MAX] {
            assert_eq!(parse_bytes(&format_bytes(n)), Ok(n), "{n}");
        }
    }
}
