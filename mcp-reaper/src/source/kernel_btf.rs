//! Kernel structure offsets from the running kernel's BTF.
//!
//! Owns: turning `/sys/kernel/btf/vmlinux` into the `TaskOffsets` (and later
//! offset sets) that the kernel programs read through, and checking the
//! tracepoint prototypes the programs assume.
//! Must never: fall back to a guessed or compiled-in offset. A field that is
//! missing is an error, so the daemon picks a lower detection tier instead.

use std::path::Path;

use btf_rs::{Btf, Type};
use mcp_reaper_common::{ExecOffsets, FileOffsets, TaskOffsets};

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
    #[error("kernel BTF: {strukt}.{field} is {got} bytes, the programs read {want}")]
    Size {
        strukt: String,
        field: String,
        got: usize,
        want: usize,
    },
    #[error("kernel BTF: {strukt}.{field} is not a struct or union")]
    NotAggregate { strukt: String, field: String },
    #[error("no syscall argument registers known for this architecture")]
    UnsupportedArch,
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
        // Mapped, not parsed up front, where the kernel allows mapping its
        // BTF (6.16+): a full parse of vmlinux BTF peaks near 40 MB.
        let btf = Btf::from_file_with_backend(path, btf_rs::Backend::Mmap)
            .or_else(|_| Btf::from_file(path))
            .map_err(|source| BtfError::Read {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self { btf })
    }

    /// Byte offset of `field` in `struct strukt`, looking through anonymous
    /// nested structs and unions (task_struct keeps many fields in them).
    pub fn field_offset(&self, strukt: &str, field: &str) -> Result<u32, BtfError> {
        self.member(strukt, &[field]).map(|m| m.offset)
    }

    /// Offset (from the start of `struct strukt`) and size of the field at
    /// `path`, each step naming a member of the previous one's struct or
    /// union type (typedefs and qualifiers are looked through, so
    /// `["f_ref", "refcnt", "counter"]` walks file_ref_t and atomic_long_t).
    /// Anonymous nesting is looked through at every step.
    pub fn member(&self, strukt: &str, path: &[&str]) -> Result<Field, BtfError> {
        let candidates = self.btf.resolve_types_by_name(strukt).unwrap_or_default();
        let mut last_err = BtfError::NoStruct(strukt.into());
        for ty in candidates {
            if let Type::Struct(s) = ty {
                match self.member_in(&s, strukt, path) {
                    Ok(f) => return Ok(f),
                    Err(e) => last_err = e,
                }
            }
        }
        Err(last_err)
    }

    fn member_in(
        &self,
        s: &btf_rs::Struct,
        strukt: &str,
        path: &[&str],
    ) -> Result<Field, BtfError> {
        let mut cur = s.clone();
        let mut bits = 0u32;
        let mut size = cur.size();
        for (i, field) in path.iter().enumerate() {
            let Some((off, m)) = self.find_member(&cur, field, 0, 0)? else {
                return Err(BtfError::NoField {
                    strukt: strukt.into(),
                    field: path[..=i].join("."),
                });
            };
            if off % 8 != 0 || m.bitfield_size().is_some_and(|b| b != 0) {
                return Err(BtfError::Bitfield {
                    strukt: strukt.into(),
                    field: path[..=i].join("."),
                });
            }
            bits += off;
            let ty = self.strip(self.btf.resolve_chained_type(&m)?)?;
            size = self.type_size(&ty)?;
            if i + 1 < path.len() {
                match ty {
                    Type::Struct(inner) | Type::Union(inner) => cur = inner,
                    _ => {
                        return Err(BtfError::NotAggregate {
                            strukt: strukt.into(),
                            field: path[..=i].join("."),
                        });
                    }
                }
            }
        }
        Ok(Field {
            offset: bits / 8,
            size,
        })
    }

    /// Looks through typedefs, qualifiers and type tags.
    fn strip(&self, mut ty: Type) -> Result<Type, BtfError> {
        for _ in 0..16 {
            match &ty {
                Type::Typedef(t) => ty = self.btf.resolve_chained_type(t)?,
                Type::Volatile(t) | Type::Const(t) | Type::Restrict(t) => {
                    ty = self.btf.resolve_chained_type(t)?
                }
                Type::TypeTag(t) => ty = self.btf.resolve_chained_type(t)?,
                _ => break,
            }
        }
        Ok(ty)
    }

    /// Size in bytes of a (stripped) type; 0 when BTF does not say.
    fn type_size(&self, ty: &Type) -> Result<usize, BtfError> {
        Ok(match ty {
            Type::Int(i) => i.size(),
            Type::Ptr(_) => size_of::<u64>(),
            Type::Struct(s) | Type::Union(s) => s.size(),
            Type::Enum(e) => e.size(),
            Type::Enum64(e) => e.size(),
            Type::Array(a) => {
                let elem = self.strip(self.btf.resolve_chained_type(a)?)?;
                a.len() * self.type_size(&elem)?
            }
            _ => 0,
        })
    }

    fn find_member(
        &self,
        s: &btf_rs::Struct,
        field: &str,
        base_bits: u32,
        depth: u32,
    ) -> Result<Option<(u32, btf_rs::Member)>, BtfError> {
        // Anonymous nesting in real kernels is a few levels deep at most.
        if depth > 8 {
            return Ok(None);
        }
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            if name == field {
                return Ok(Some((base_bits + m.bit_offset(), m.clone())));
            }
            if name.is_empty() {
                match self.btf.resolve_chained_type(m)? {
                    Type::Struct(inner) | Type::Union(inner) => {
                        if let Some(found) =
                            self.find_member(&inner, field, base_bits + m.bit_offset(), depth + 1)?
                        {
                            return Ok(Some(found));
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

    /// Offsets for reading a new image's command line at exec.
    pub fn exec_offsets(&self) -> Result<ExecOffsets, BtfError> {
        const PTR: usize = 8;
        Ok(ExecOffsets {
            task_mm: self.sized("task_struct", &["mm"], PTR)?,
            mm_arg_start: self.sized("mm_struct", &["arg_start"], 8)?,
            mm_arg_end: self.sized("mm_struct", &["arg_end"], 8)?,
            valid: 1,
        })
    }

    /// A field the programs read with a fixed width: its offset, after
    /// checking that the kernel's field has that width.
    fn sized(&self, strukt: &str, path: &[&str], want: usize) -> Result<u32, BtfError> {
        let f = self.member(strukt, path)?;
        if f.size != want {
            return Err(BtfError::Size {
                strukt: strukt.into(),
                field: path.join("."),
                got: f.size,
                want,
            });
        }
        Ok(f.offset)
    }

    /// Offsets for the close program (`sys_enter`). Any missing
    /// field is an error: the caller then runs without the close tier.
    pub fn file_offsets(&self) -> Result<FileOffsets, BtfError> {
        const PTR: usize = 8;
        // file_ref_t (6.13+) stores refs - 1; older kernels count refs.
        let (file_ref, ref_one) = match self.sized("file", &["f_ref", "refcnt", "counter"], 8) {
            Ok(off) => (off, 0),
            Err(e) => match self.sized("file", &["f_count", "counter"], 8) {
                Ok(off) => (off, 1),
                Err(_) => return Err(e),
            },
        };
        // SOCK_INODE(sock): the inode follows the socket in socket_alloc.
        let socket_to_inode = self
            .field_offset("socket_alloc", "vfs_inode")?
            .checked_sub(self.field_offset("socket_alloc", "socket")?)
            .ok_or_else(|| BtfError::NoField {
                strukt: "socket_alloc".into(),
                field: "vfs_inode after socket".into(),
            })?;
        let sock_ino = match self.sized("sock", &["sk_ino"], 8) {
            Ok(off) => off,
            Err(BtfError::NoField { .. }) => u32::MAX,
            Err(e) => return Err(e),
        };
        Ok(FileOffsets {
            task_files: self.sized("task_struct", &["files"], PTR)?,
            files_fdt: self.sized("files_struct", &["fdt"], PTR)?,
            fdt_max_fds: self.sized("fdtable", &["max_fds"], 4)?,
            fdt_fd: self.sized("fdtable", &["fd"], PTR)?,
            file_ref,
            ref_one,
            file_inode: self.sized("file", &["f_inode"], PTR)?,
            file_mode: self.sized("file", &["f_mode"], 4)?,
            file_private: self.sized("file", &["private_data"], PTR)?,
            inode_mode: self.sized("inode", &["i_mode"], 2)?,
            inode_ino: self.sized("inode", &["i_ino"], 8)?,
            inode_pipe: self.sized("inode", &["i_pipe"], PTR)?,
            pipe_readers: self.sized("pipe_inode_info", &["readers"], 4)?,
            pipe_writers: self.sized("pipe_inode_info", &["writers"], 4)?,
            socket_sk: self.sized("socket", &["sk"], PTR)?,
            sock_family: self.sized("sock", &["__sk_common", "skc_family"], 2)?,
            sock_ino,
            sock_socket: self.sized("sock", &["sk_socket"], PTR)?,
            socket_to_inode,
            // unix_sock embeds its struct sock first: a sock * is a unix_sock *.
            unix_peer: if self.field_offset("unix_sock", "sk")? == 0 {
                self.sized("unix_sock", &["peer"], PTR)?
            } else {
                return Err(BtfError::NoField {
                    strukt: "unix_sock".into(),
                    field: "sk at offset 0".into(),
                });
            },
            regs_arg: self.syscall_arg_offsets()?,
            valid: 1,
        })
    }

    /// Where `struct pt_regs` keeps syscall arguments 0..2 at `sys_enter`.
    fn syscall_arg_offsets(&self) -> Result<[u32; 3], BtfError> {
        if cfg!(target_arch = "x86_64") {
            Ok([
                self.sized("pt_regs", &["di"], 8)?,
                self.sized("pt_regs", &["si"], 8)?,
                self.sized("pt_regs", &["dx"], 8)?,
            ])
        } else if cfg!(target_arch = "aarch64") {
            let base = self.member("pt_regs", &["regs"])?.offset;
            Ok([base, base + 8, base + 16])
        } else {
            Err(BtfError::UnsupportedArch)
        }
    }
}

/// A resolved struct field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Byte offset from the start of the outermost struct.
    pub offset: u32,
    /// Size of the field's type in bytes (0 when BTF does not say).
    pub size: usize,
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
    fn exec_offsets_resolve_through_mm_structs_anonymous_nesting() {
        let Some(k) = kernel() else { return };
        let o = k.exec_offsets().unwrap();
        assert_eq!(o.valid, 1);
        // arg_end follows arg_start directly in every kernel since 2.6.
        assert_eq!(o.mm_arg_end, o.mm_arg_start + 8);
    }

    #[test]
    fn file_offsets_resolve_with_the_widths_the_close_program_reads() {
        let Some(k) = kernel() else { return };
        let o = k.file_offsets().unwrap();
        eprintln!("{o:?}");
        assert_eq!(o.valid, 1);
        // sys_enter is (struct pt_regs *regs, long id).
        assert_eq!(k.tracepoint_args("sys_enter"), Some(2));
        // Nested named members: file_ref_t.refcnt.counter sits at f_ref.
        if o.ref_one == 0 {
            assert_eq!(o.file_ref, k.field_offset("file", "f_ref").unwrap());
        }
        let f = k.member("sock", &["__sk_common", "skc_family"]).unwrap();
        assert_eq!(f.size, 2);
        assert_eq!(f.offset, o.sock_family);
        assert!(o.socket_to_inode > 0);
    }

    #[test]
    fn member_paths_report_missing_steps_and_wrong_widths() {
        let Some(k) = kernel() else { return };
        assert!(matches!(
            k.member("file", &["f_inode", "i_ino"]),
            Err(BtfError::NotAggregate { .. })
        ));
        assert!(matches!(
            k.member("sock", &["__sk_common", "no_such"]),
            Err(BtfError::NoField { .. })
        ));
        assert!(matches!(
            k.sized("inode", &["i_mode"], 4),
            Err(BtfError::Size { got: 2, .. })
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
