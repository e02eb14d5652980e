use std::process::ExitCode;

fn main() -> ExitCode {
    match dualpub::cli::run() {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(f) => {
            eprintln!("dualpub: error: {f}");
            ExitCode::from(f.exit.code())
        }
    }
}
