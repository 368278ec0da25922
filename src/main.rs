//! The `switchyard` binary: everything lives in the library (`cli::main`).

/// mimalloc instead of glibc malloc: pingora's path allocates ~70 times per
/// proxied request (the fast path none); see the commit that added this for
/// the measurements. Built with `no_thp`: mimalloc's transparent huge pages
/// cost ~4.6 KB per idle client connection and 12 MB at start.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
