//! The `gantry` binary: everything is in the library (`src/lib.rs`).

fn main() -> std::process::ExitCode {
    gantry_cli::main()
}
