use std::process::ExitCode;

/// jemalloc instead of glibc's malloc: a sync allocates and frees from several threads at once (the engine, the
/// page mapper, the receipt writers, sled's flusher), and glibc either serialises them on a few arenas (measured:
/// ~10 % of a backfill's CPU waiting on arena locks) or, with an arena per thread, keeps tens of MiB more. jemalloc's
/// per-thread caches avoid both: a 1M-record backfill ran at ~31k records/s instead of ~15k at the same peak RSS
/// (README, "Dependencies, and why each is there").
#[cfg(unix)]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: two arenas (enough for two cores; each arena keeps its own free
/// memory), freed pages returned to the system within a second, and no lazily-purged ("muzzy") pages kept.
/// The environment variable `_RJEM_MALLOC_CONF` still overrides them.
#[cfg(unix)]
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8] = b"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    match dualpub::cli::run() {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(f) => {
            dualpub::say!("dualpub: error: {f}");
            ExitCode::from(f.exit.code())
        }
    }
}
