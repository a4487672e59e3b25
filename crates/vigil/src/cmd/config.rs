//! `vigil config default`: print the commented default configuration file.

#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the default configuration file, every key commented.
    Default,
}

pub fn run(args: ConfigArgs) -> i32 {
    match args.command {
        ConfigCommand::Default => print!("{}", vigil_server::Config::default_toml()),
    }
    0
}
