//! Kernel structure offsets from the running kernel's BTF.
//!
//! Owns: turning `/sys/kernel/btf/vmlinux` into the `TaskOffsets` (and later
//! offset sets) that the kernel programs read through, and checking the
//! tracepoint prototypes the programs assume.
//! Must never: fall back to a guessed or compiled-in offset. A field that is
//! missing is an error, so the daemon picks a lower detection tier instead.

use std::path::Path;

use btf_rs::{Btf, Type};
use mcp_reaper_common::TaskOffsets;

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF at {path}: {source}")]
    Read { path: String, source: btf_rs::Error },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt} has no field {field}")]
    NoField { strukt: String, field: String },
    #[error("kernel BTF: {strukt}.{field} is a bitfield, which the programs cannot read")]
    Bitfield { strukt: String, field: String },
    #[error("kernel BTF: {0}")]
    Other(#[from] btf_rs::Error),
}

/// The running kernel's BTF.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    /// Loads BTF from `path` (normally [`VMLINUX_BTF`]).
    pub fn load(path: &Path) -> Result<Self, BtfError> {
        let btf = Btf::from_file(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self { btf })
    }

    /// Byte offset of `field` in `struct strukt`, looking through anonymous
    /// nested structs and unions (task_struct keeps many fields in them).
    pub fn field_offset(&self, strukt: &str, field: &str) -> Result<u32, BtfError> {
        let candidates = self.btf.resolve_types_by_name(strukt).unwrap_or_default();
        let mut found_struct = false;
        for ty in candidates {
            if let Type::Struct(s) = ty {
                found_struct = true;
                if let Some(bits) = self.find_member(&s, field, 0, 0)? {
                    if bits % 8 != 0 {
                        return Err(BtfError::Bitfield {
                            strukt: strukt.into(),
                            field: field.into(),
                        });
                    }
                    return Ok(bits / 8);
                }
            }
        }
        if found_struct {
            Err(BtfError::NoField {
                strukt: strukt.into(),
                field: field.into(),
            })
        } else {
            Err(BtfError::NoStruct(strukt.into()))
        }
    }

    fn find_member(
        &self,
        s: &btf_rs::Struct,
        field: &str,
        base_bits: u32,
        depth: u32,
    ) -> Result<Option<u32>, BtfError> {
        // Anonymous nesting in real kernels is a few levels deep at most.
        if depth > 8 {
            return Ok(None);
        }
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            if name == field {
                return Ok(Some(base_bits + m.bit_offset()));
            }
            if name.is_empty() {
                match self.btf.resolve_chained_type(m)? {
                    Type::Struct(inner) | Type::Union(inner) => {
                        if let Some(off) =
                            self.find_member(&inner, field, base_bits + m.bit_offset(), depth + 1)?
                        {
                            return Ok(Some(off));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(None)
    }

    /// Number of arguments of a BTF-enabled tracepoint (the `btf_trace_NAME`
    /// typedef is a pointer to a prototype whose first argument is the
    /// context), or `None` when the kernel has no such tracepoint.
    pub fn tracepoint_args(&self, name: &str) -> Option<usize> {
        let typedef = format!("btf_trace_{name}");
        let ty = self
            .btf
            .resolve_types_by_name(&typedef)
            .ok()?
            .into_iter()
            .next()?;
        let Type::Typedef(td) = ty else { return None };
        let Type::Ptr(ptr) = self.btf.resolve_chained_type(&td).ok()? else {
            return None;
        };
        let Type::FuncProto(proto) = self.btf.resolve_chained_type(&ptr).ok()? else {
            return None;
        };
        Some(proto.parameters.len().saturating_sub(1))
    }

    /// Offsets for the process-event programs.
    pub fn task_offsets(&self) -> Result<TaskOffsets, BtfError> {
        let f = |field| self.field_offset("task_struct", field);
        Ok(TaskOffsets {
            task_pid: f("pid")?,
            task_tgid: f("tgid")?,
            task_real_parent: f("real_parent")?,
            task_group_leader: f("group_leader")?,
            task_start_boottime: f("start_boottime")?,
            task_comm: f("comm")?,
            task_exit_code: f("exit_code")?,
            valid: 1,
        })
    }
}

impl std::fmt::Debug for KernelBtf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KernelBtf")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn kernel() -> Option<KernelBtf> {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("skipped: {VMLINUX_BTF} is absent on this kernel");
            return None;
        }
        Some(KernelBtf::load(path).expect("kernel BTF parses"))
    }

    #[test]
    fn task_offsets_resolve_and_are_distinct() {
        let Some(k) = kernel() else { return };
        let o = k.task_offsets().unwrap();
        let all = [
            o.task_pid,
            o.task_tgid,
            o.task_real_parent,
            o.task_group_leader,
            o.task_start_boottime,
            o.task_comm,
            o.task_exit_code,
        ];
        let mut sorted = all.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len(), "offsets collide: {o:?}");
        // tgid immediately follows pid (both pid_t) in every kernel since 2.6.
        assert_eq!(o.task_tgid, o.task_pid + 4);
    }

    #[test]
    fn missing_fields_and_structs_are_errors_not_guesses() {
        let Some(k) = kernel() else { return };
        assert!(matches!(
            k.field_offset("task_struct", "no_such_field_here"),
            Err(BtfError::NoField { .. })
        ));
        assert!(matches!(
            k.field_offset("no_such_struct_here", "pid"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn process_tracepoints_have_the_expected_prototypes() {
        let Some(k) = kernel() else { return };
        assert_eq!(k.tracepoint_args("sched_process_fork"), Some(2));
        assert!(k.tracepoint_args("sched_process_exec").is_some());
        assert!(k.tracepoint_args("sched_process_exit").unwrap() >= 1);
        assert_eq!(k.tracepoint_args("no_such_tracepoint"), None);
    }
}
