//! Size limits checked before the loaders allocate: a per-image pixel limit for decoded
//! PNG/JPEG files ([`MAX_IMAGE_PIXELS`], checked against the file's header), and the memory a
//! whole data set will take against what this process may use ([`check_fits`], with the
//! available memory from [`available_memory`]: `MemAvailable` of `/proc/meminfo`, lowered to
//! the headroom of the process's cgroup — what Slurm's `--mem` sets — when that is smaller).
//! Where neither can be read (not Linux) only the pixel limit applies.

use crate::error::{Error, Result};
use std::path::Path;

/// Largest image (width × height) a folder data set may hold: 2^26 pixels (e.g. 8192×8192).
/// Decoding one takes up to 12 bytes per pixel (the decoder's buffer at 16-bit RGBA plus the
/// gray copy), i.e. at most 768 MiB at the limit, and images are decoded in parallel.
pub const MAX_IMAGE_PIXELS: u64 = 1 << 26;

/// Reject an image whose header claims more than [`MAX_IMAGE_PIXELS`], before decoding it.
pub fn check_image_size(path: &Path, width: u64, height: u64) -> Result<()> {
    let pixels = width.saturating_mul(height);
    if pixels > MAX_IMAGE_PIXELS {
        return Err(Error::data(
            path,
            format!(
                "image is {width}×{height} = {pixels} pixels, above the limit of {MAX_IMAGE_PIXELS} \
                 pixels (2^26, e.g. 8192×8192) per image; images are resized to `data.size` anyway, \
                 so shrink this one (e.g. `convert in.png -resize 1024x1024 out.png`) or move it \
                 out of `data.root`"
            ),
        ));
    }
    Ok(())
}

/// Bytes this process can still allocate, if known: `MemAvailable`, capped by the cgroup's
/// limit minus its current usage (cgroup v2 `memory.max` / `memory.current`, or v1
/// `memory.limit_in_bytes` / `memory.usage_in_bytes`).
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let host = meminfo.as_deref().and_then(mem_available);
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| cgroup_headroom(&c, |p| std::fs::read_to_string(p).ok()));
    match (host, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Smallest limit-minus-usage over the cgroup named in a `/proc/self/cgroup` text and its
/// ancestors (Slurm limits the job's cgroup; a task runs in a child); `read` reads a file.
fn cgroup_headroom(self_cgroup: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    let num = |p: String| read(&p).and_then(|t| t.trim().parse::<u64>().ok());
    let mut best: Option<u64> = None;
    for line in self_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        // cgroup v2 (empty controller list) or the v1 memory hierarchy.
        let (base, limit_file, usage_file) = if controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                "/sys/fs/cgroup/memory",
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            continue;
        };
        let mut dir = path.trim_end_matches('/').to_string();
        loop {
            // v2 writes "max" (no number) and v1 about 2^63 for "no limit".
            if let Some(limit) = num(format!("{base}{dir}/{limit_file}")).filter(|&l| l < 1 << 60) {
                // Usage counts the page cache; its inactive part is reclaimable (the
                // kubelet's "working set" rule).
                let used = num(format!("{base}{dir}/{usage_file}")).unwrap_or(0);
                let cache = read(&format!("{base}{dir}/memory.stat"))
                    .and_then(|t| inactive_file(&t))
                    .unwrap_or(0);
                let room = limit.saturating_sub(used.saturating_sub(cache));
                best = Some(best.map_or(room, |b| b.min(room)));
            }
            match dir.rfind('/') {
                Some(cut) => dir.truncate(cut),
                None => break,
            }
        }
    }
    best
}

/// The reclaimable page cache of a cgroup's `memory.stat` (`inactive_file`, or v1's
/// hierarchical `total_inactive_file`).
fn inactive_file(stat: &str) -> Option<u64> {
    let field = |name: &str| {
        stat.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    field("total_inactive_file").or_else(|| field("inactive_file"))
}

/// Reject a data set of `images` images of `pixels` f32 values that would not fit in memory.
/// The pipeline holds the set once and its three splits once more, so twice the array must
/// fit in `available` (`None` = unknown: no check). `path` and `fix` go into the message.
pub fn check_fits(
    path: &Path,
    images: usize,
    pixels: usize,
    available: Option<u64>,
    fix: &str,
) -> Result<()> {
    let Some(avail) = available else {
        return Ok(());
    };
    let bytes = (images as u64)
        .saturating_mul(pixels as u64)
        .saturating_mul(4);
    let need = bytes.saturating_mul(2);
    if need > avail {
        let mib = |b: u64| b / (1 << 20);
        return Err(Error::data(
            path,
            format!(
                "{images} images of {pixels} pixels need {} MiB as f32 ({} MiB with the \
                 training/validation/test copies) but only {} MiB of memory is available; {fix}",
                mib(bytes),
                mib(need),
                mib(avail)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_size_limit() {
        let p = Path::new("x/huge.png");
        assert!(check_image_size(p, 8192, 8192).is_ok());
        let e = check_image_size(p, 20000, 20000).unwrap_err().to_string();
        assert!(e.contains("x/huge.png") && e.contains("20000×20000"), "{e}");
        assert!(check_image_size(p, u64::MAX, u64::MAX).is_err());
    }

    #[test]
    fn meminfo_and_cgroups_parse() {
        let mi = "MemTotal:       16000000 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(mem_available(mi), Some(2048 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        let files = |p: &str| match p {
            "/sys/fs/cgroup/job/memory.max" => Some("1000\n".to_string()),
            "/sys/fs/cgroup/job/memory.current" => Some("500\n".to_string()),
            "/sys/fs/cgroup/job/memory.stat" => {
                Some("anon 300\nfile 250\ninactive_file 200\n".to_string())
            }
            "/sys/fs/cgroup/free/memory.max" => Some("max\n".to_string()),
            "/sys/fs/cgroup/memory/slurm/memory.limit_in_bytes" => Some("5000".to_string()),
            "/sys/fs/cgroup/memory/slurm/memory.usage_in_bytes" => Some("1500".to_string()),
            "/sys/fs/cgroup/memory/slurm/memory.stat" => {
                Some("cache 900\ninactive_file 800\ntotal_inactive_file 500\n".to_string())
            }
            "/sys/fs/cgroup/memory/none/memory.limit_in_bytes" => {
                Some("9223372036854771712".to_string())
            }
            _ => None,
        };
        assert_eq!(cgroup_headroom("0::/job\n", files), Some(700));
        // A child without its own limit inherits its parent's.
        assert_eq!(cgroup_headroom("0::/job/step_0/task\n", files), Some(700));
        assert_eq!(cgroup_headroom("0::/free\n", files), None);
        assert_eq!(
            cgroup_headroom("5:cpu:/x\n4:memory,foo:/slurm\n", files),
            Some(4000)
        );
        assert_eq!(cgroup_headroom("4:memory:/none\n", files), None);
        assert!(available_memory().is_none_or(|b| b > 0));
    }

    #[test]
    fn data_set_memory_check() {
        let p = Path::new("root");
        assert!(check_fits(p, 10, 10, None, "fix").is_ok());
        assert!(check_fits(p, 1000, 1000, Some(8_000_000), "fix").is_ok());
        let e = check_fits(p, 1000, 1000, Some(7_999_999), "lower `data.size`")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("root: 1000 images") && e.contains("lower `data.size`"),
            "{e}"
        );
    }
}
