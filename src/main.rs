//! The `switchyard` binary: everything lives in the library (`cli::main`).

/// mimalloc instead of glibc malloc: pingora allocates ~70 times per proxied
/// request; see the commit that added this for the measurements.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
