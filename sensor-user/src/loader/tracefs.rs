//! tracefs: making sure it is mounted, and reading tracepoint field offsets from `format` files.

use std::{fs, path::Path};

use anyhow::{Context, Result, anyhow};

/// Where tracefs is mounted, if it is.
pub fn tracefs_root() -> Option<&'static str> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .find(|p| Path::new(p).join("events").is_dir())
}

/// Mounts tracefs at `/sys/kernel/tracing` when no tracefs is mounted (aya attaches tracepoints
/// through it). Returns the root in use.
pub fn ensure_tracefs() -> Result<&'static str> {
    if let Some(root) = tracefs_root() {
        return Ok(root);
    }
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context(
            "tracefs is not mounted and mounting it at /sys/kernel/tracing failed; mount it with \
             `mount -t tracefs tracefs /sys/kernel/tracing`",
        );
    }
    tracefs_root()
        .ok_or_else(|| anyhow!("mounted tracefs but /sys/kernel/tracing/events is missing"))
}

/// Field offsets of one tracepoint, from `events/<category>/<name>/format`.
pub struct TracepointFormat {
    name: String,
    fields: Vec<(String, u32)>,
}

impl TracepointFormat {
    pub fn read(root: &str, category: &str, name: &str) -> Result<Self> {
        let path = format!("{root}/events/{category}/{name}/format");
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "reading tracepoint format {path}: is tracepoint {category}:{name} in this kernel?"
            )
        })?;
        Ok(Self::parse(&format!("{category}:{name}"), &text))
    }

    /// Parses lines like `field:__data_loc char[] filename; offset:8; size:4; signed:0;`.
    pub fn parse(name: &str, text: &str) -> Self {
        let fields = text
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                let decl = line.strip_prefix("field:")?.split(';').next()?;
                let field = decl.split_whitespace().last()?;
                let field = field.split('[').next()?.to_string();
                let offset = line
                    .split("offset:")
                    .nth(1)?
                    .split(';')
                    .next()?
                    .trim()
                    .parse()
                    .ok()?;
                Some((field, offset))
            })
            .collect();
        Self {
            name: name.to_string(),
            fields,
        }
    }

    pub fn offset(&self, field: &str) -> Result<u32> {
        self.fields
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, o)| *o)
            .ok_or_else(|| {
                anyhow!(
                    "tracepoint {} has no field `{field}` in this kernel",
                    self.name
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_format_files() {
        let exec = "name: sched_process_exec\nID: 311\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\
            \tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n";
        let f = TracepointFormat::parse("sched:sched_process_exec", exec);
        assert_eq!(f.offset("filename").unwrap(), 8);
        assert_eq!(f.offset("pid").unwrap(), 12);
        assert_eq!(f.offset("common_type").unwrap(), 0);
        let err = f.offset("nope").unwrap_err().to_string();
        assert!(
            err.contains("sched:sched_process_exec") && err.contains("nope"),
            "{err}"
        );

        let exit = "\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n";
        assert_eq!(
            TracepointFormat::parse("x", exit).offset("comm").unwrap(),
            8
        );
    }
}
