//! Load knobs: memory that is allocated and kept until cleared, and CPU burned by threads for a
//! while. They exist to show resource limits at work (a container over its memory limit is
//! OOM-killed; a CPU quota throttles the burners).
//!
//! Allocated memory is written to, so it is resident and counts against the cgroup limit at once
//! (an untouched allocation would only reserve address space).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A size that cannot be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("size must be a byte count with an optional k/Ki/M/Mi/G/Gi suffix, got {0:?}")]
pub struct BadSize(pub String);

/// Bytes from `1048576`, `512k`, `300Mi`, `1G`. Decimal suffixes are powers of 1000, binary
/// ones (`Ki`, `Mi`, `Gi`) powers of 1024, as Kubernetes quantities are.
pub fn parse_size(s: &str) -> Result<usize, BadSize> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let n: usize = digits.parse().map_err(|_| BadSize(s.into()))?;
    let mult: usize = match suffix {
        "" | "B" => 1,
        "k" | "K" | "kB" | "KB" => 1000,
        "Ki" | "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "Mi" | "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "Gi" | "GiB" => 1 << 30,
        _ => return Err(BadSize(s.into())),
    };
    n.checked_mul(mult).ok_or_else(|| BadSize(s.into()))
}

/// Memory held on purpose.
#[derive(Default)]
pub struct Memory {
    chunks: Mutex<Vec<Vec<u8>>>,
}

impl Memory {
    /// Allocates `size` bytes, touches every page and keeps them. Fails only if the allocator
    /// refuses; the kernel's OOM killer may end the process instead, which is the point.
    pub fn alloc(&self, size: usize) -> Result<(), std::collections::TryReserveError> {
        let mut chunk = Vec::new();
        chunk.try_reserve_exact(size)?;
        chunk.resize(size, 0x5a);
        self.chunks.lock().expect("memory lock").push(chunk);
        Ok(())
    }

    /// Frees everything allocated so far; returns the bytes freed.
    pub fn clear(&self) -> usize {
        let chunks = std::mem::take(&mut *self.chunks.lock().expect("memory lock"));
        chunks.iter().map(Vec::len).sum()
    }

    /// Bytes currently held, and in how many allocations.
    pub fn held(&self) -> (usize, usize) {
        let chunks = self.chunks.lock().expect("memory lock");
        (chunks.iter().map(Vec::len).sum(), chunks.len())
    }
}

/// The process's resident set size in bytes, from /proc/self/status (None off Linux).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Longest burn one request may ask for.
pub const MAX_BURN: Duration = Duration::from_secs(3600);
/// Most burner threads one request may start.
pub const MAX_THREADS: usize = 64;

/// Starts `threads` OS threads that spin for `duration` and then end. Plain threads, not the
/// async runtime's, so the server keeps answering (and shuts down) while they run.
pub fn burn_cpu(duration: Duration, threads: usize) {
    let deadline = Instant::now() + duration.min(MAX_BURN);
    for _ in 0..threads.clamp(1, MAX_THREADS) {
        std::thread::spawn(move || {
            let mut x: u64 = 1;
            while Instant::now() < deadline {
                for _ in 0..10_000 {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_quantities() {
        let cases = [
            ("0", Ok(0)),
            ("1048576", Ok(1 << 20)),
            ("512k", Ok(512_000)),
            ("4Ki", Ok(4096)),
            ("300Mi", Ok(300 << 20)),
            ("2M", Ok(2_000_000)),
            ("1Gi", Ok(1 << 30)),
            (" 10 ", Ok(10)),
            ("", Err(())),
            ("Mi", Err(())),
            ("10X", Err(())),
            ("-5", Err(())),
            ("99999999999999999999Gi", Err(())),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input).map_err(|_| ()), want, "{input:?}");
        }
    }

    #[test]
    fn memory_is_held_until_cleared() {
        let m = Memory::default();
        m.alloc(1 << 20).unwrap();
        m.alloc(4096).unwrap();
        assert_eq!(m.held(), ((1 << 20) + 4096, 2));
        assert_eq!(m.clear(), (1 << 20) + 4096);
        assert_eq!(m.held(), (0, 0));
    }

    #[test]
    fn rss_is_read_from_proc() {
        assert!(rss_bytes().is_some_and(|b| b > 0));
    }
}
