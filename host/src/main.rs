//! The `hodei` binary; everything lives in the library (see its docs).

fn main() -> std::process::ExitCode {
    hodei::cli::main()
}
