use std::process::ExitCode;

fn main() -> ExitCode {
    finch_webhooks::cli::main()
}
