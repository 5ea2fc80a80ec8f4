//! What `dist` checks in a binary before it packages it: that it is static
//! (no program interpreter) and that it embeds the kernel programs (BPF ELF
//! objects), which a build with `AYA_BUILD_SKIP` leaves out.
//!
//! Owns: reading ELF headers from bytes. Must never: change a file.
use anyhow::{Result, bail};

const MAGIC: &[u8; 4] = b"\x7fELF";
const CLASS_64: u8 = 2;
const LITTLE_ENDIAN: u8 = 1;
const EM_BPF: u16 = 247;
const PT_INTERP: u32 = 3;

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    let mut word = [0; 8];
    word.copy_from_slice(b);
    Some(u64::from_le_bytes(word))
}

/// Whether an ELF header for a 64-bit little-endian file starts at `at`.
fn elf64_le_at(bytes: &[u8], at: usize) -> bool {
    bytes.get(at..at + 4) == Some(MAGIC.as_slice())
        && bytes.get(at + 4) == Some(&CLASS_64)
        && bytes.get(at + 5) == Some(&LITTLE_ENDIAN)
}

/// A 64-bit little-endian executable that asks for no program interpreter
/// (`PT_INTERP`): it runs without a dynamic loader or shared libraries.
pub fn is_static_executable(bytes: &[u8]) -> Result<bool> {
    if !elf64_le_at(bytes, 0) {
        bail!("not a 64-bit little-endian ELF file");
    }
    let header = (|| {
        let phoff = usize::try_from(u64_at(bytes, 0x20)?).ok()?;
        let phentsize = usize::from(u16_at(bytes, 0x36)?);
        let phnum = usize::from(u16_at(bytes, 0x38)?);
        Some((phoff, phentsize, phnum))
    })();
    let Some((phoff, phentsize, phnum)) = header else {
        bail!("truncated ELF header");
    };
    for i in 0..phnum {
        let Some(p_type) = u32_at(bytes, phoff + i * phentsize) else {
            bail!("truncated program header table");
        };
        if p_type == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

/// How many BPF ELF objects the bytes embed (each an ELF header whose
/// machine is `EM_BPF`).
pub fn embedded_bpf_objects(bytes: &[u8]) -> usize {
    bytes
        .windows(MAGIC.len())
        .enumerate()
        .filter(|&(at, window)| {
            window == MAGIC && elf64_le_at(bytes, at) && u16_at(bytes, at + 18) == Some(EM_BPF)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-byte ELF64 LE header with `phnum` program headers of type
    /// `p_type` right after it.
    fn elf(machine: u16, p_types: &[u32]) -> Vec<u8> {
        let mut bytes = vec![0; 64];
        bytes[..4].copy_from_slice(MAGIC);
        bytes[4] = CLASS_64;
        bytes[5] = LITTLE_ENDIAN;
        bytes[18..20].copy_from_slice(&machine.to_le_bytes());
        bytes[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        let phnum = u16::try_from(p_types.len()).unwrap_or(u16::MAX);
        bytes[0x38..0x3a].copy_from_slice(&phnum.to_le_bytes());
        for p_type in p_types {
            let mut header = vec![0; 56];
            header[..4].copy_from_slice(&p_type.to_le_bytes());
            bytes.extend(header);
        }
        bytes
    }

    #[test]
    fn interpreter_means_dynamic() -> Result<()> {
        const PT_LOAD: u32 = 1;
        const PT_DYNAMIC: u32 = 2;
        assert!(is_static_executable(&elf(62, &[PT_LOAD, PT_DYNAMIC]))?);
        assert!(!is_static_executable(&elf(62, &[PT_INTERP, PT_LOAD]))?);
        assert!(is_static_executable(b"#!/bin/sh\n").is_err());
        let mut truncated = elf(62, &[PT_LOAD]);
        truncated.truncate(66);
        assert!(is_static_executable(&truncated).is_err());
        Ok(())
    }

    #[test]
    fn counts_embedded_bpf_objects_only() {
        let mut binary = elf(62, &[1]);
        assert_eq!(embedded_bpf_objects(&binary), 0);
        binary.extend(elf(EM_BPF, &[]));
        binary.extend(b"padding");
        binary.extend(elf(EM_BPF, &[]));
        assert_eq!(embedded_bpf_objects(&binary), 2);
        // A skipped build embeds empty objects: nothing to find.
        assert_eq!(embedded_bpf_objects(b""), 0);
    }
}
