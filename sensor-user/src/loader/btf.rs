//! Kernel struct member offsets read from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Members inside anonymous structs and unions are found by descending into them, as the kernel
//! moves fields into such wrappers between releases.

use anyhow::{Context, Result, anyhow, bail};
use btf_rs::{Btf, Type};

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The running kernel's types.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load() -> Result<Self> {
        let btf = Btf::from_file(VMLINUX_BTF).with_context(|| {
            format!("reading kernel BTF from {VMLINUX_BTF}: the kernel must be built with CONFIG_DEBUG_INFO_BTF=y")
        })?;
        Ok(Self { btf })
    }

    fn struct_named(&self, name: &str) -> Result<btf_rs::Struct> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|e| anyhow!("BTF has no type `{name}`: {e}"))?;
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| anyhow!("BTF has no struct `{name}` with members"))
    }

    /// Byte offset of `member` in `struct name`.
    pub fn offset(&self, name: &str, member: &str) -> Result<u32> {
        let s = self.struct_named(name)?;
        self.find_member(&s, member)?
            .ok_or_else(|| anyhow!("struct {name} has no member `{member}` in this kernel's BTF"))
    }

    /// Byte offset of `ns.inum` in a namespace struct (`struct net`, `struct pid_namespace`...).
    pub fn ns_inum_offset(&self, name: &str) -> Result<u32> {
        Ok(self.offset(name, "ns")? + self.offset("ns_common", "inum")?)
    }

    /// Size in bytes of `struct name`.
    pub fn size(&self, name: &str) -> Result<u32> {
        Ok(self.struct_named(name)?.size() as u32)
    }

    fn find_member(&self, s: &btf_rs::Struct, member: &str) -> Result<Option<u32>> {
        for m in &s.members {
            if m.bitfield_size().is_some_and(|b| b != 0) {
                continue;
            }
            let name = self.btf.resolve_name(m).unwrap_or_default();
            let bits = m.bit_offset();
            if bits % 8 != 0 {
                continue;
            }
            if name == member {
                return Ok(Some(bits / 8));
            }
            if name.is_empty() {
                // Anonymous struct/union: look inside, offsets add up.
                let inner = self
                    .btf
                    .resolve_chained_type(m)
                    .map_err(|e| anyhow!("{e}"))?;
                if let Some(inner) = self.strip(inner)?
                    && let Some(off) = self.find_member(&inner, member)?
                {
                    return Ok(Some(bits / 8 + off));
                }
            }
        }
        Ok(None)
    }

    /// Follows typedefs and qualifiers to a struct or union.
    fn strip(&self, mut t: Type) -> Result<Option<btf_rs::Struct>> {
        for _ in 0..16 {
            match t {
                Type::Struct(s) | Type::Union(s) => return Ok(Some(s)),
                Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::Restrict(_) => {
                    let bt = t.as_btf_type().ok_or_else(|| anyhow!("untyped BTF node"))?;
                    t = self
                        .btf
                        .resolve_chained_type(bt)
                        .map_err(|e| anyhow!("{e}"))?;
                }
                _ => return Ok(None),
            }
        }
        bail!("BTF type chain too deep")
    }
}
