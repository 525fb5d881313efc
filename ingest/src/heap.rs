//! Gives the allocator's free memory back to the operating system once
//! ingest goes idle.
//!
//! Why: a pull of up to `--ingest-batch` messages of up to 1 MiB is decoded
//! into one transaction's worth of cases, tens of MiB that are freed right
//! after the commit. glibc keeps freed memory in its arenas (one per thread
//! that allocated), so after a burst of large runs the master's RSS stayed
//! at the burst's peak (bench: 173 MiB after 1,000,000 cases, 23 MiB for
//! the same database after a restart). `malloc_trim(0)` returns the free
//! pages of every arena; it is called once per idle period, not per batch,
//! so a busy stream never pays for it.
//!
//! Guarantees: never frees anything in use (it only releases what the
//! allocator already holds free); a no-op on targets without glibc.

/// Releases free heap memory to the OS (glibc's `malloc_trim`).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists
        // under its locks; it takes no pointers and is safe at any time.
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/self/status")
    }

    #[test]
    fn freed_memory_held_between_live_blocks_goes_back() {
        // 64 MiB in 16 KiB blocks (below glibc's mmap threshold, so they
        // come from the heap), touched so they count in RSS; every 64th
        // block stays alive, which pins the heap so that free() alone
        // cannot shrink it from the top, as after a real batch.
        let blocks: Vec<Vec<u8>> = (0..4096)
            .map(|i| vec![(i % 251) as u8 + 1; 16 * 1024])
            .collect();
        let mut kept = Vec::new();
        for (i, b) in blocks.into_iter().enumerate() {
            if i % 64 == 0 {
                kept.push(b);
            }
        }
        let before = rss_kib();
        super::release_free_memory();
        let after = rss_kib();
        assert!(
            after + 32 * 1024 < before,
            "RSS {before} KiB before the trim, {after} KiB after: expected at least 32 MiB back"
        );
        assert_eq!(kept.len(), 64);
        assert!(
            kept.iter()
                .enumerate()
                .all(|(i, b)| b[100] == ((i * 64) % 251) as u8 + 1)
        );
    }
}
