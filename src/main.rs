// mimalloc: the daemon allocates many small, short-lived strings per event; the system
// allocator spent about a quarter of its CPU in malloc/free (perf, the catch-up of benches/load).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
