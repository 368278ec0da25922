//! The `switchyard` binary: everything lives in the library (`cli::main`).

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
