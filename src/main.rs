use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = tlsfront::cli::Cli::parse();
    match tlsfront::app::main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tlsfront: error: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}
