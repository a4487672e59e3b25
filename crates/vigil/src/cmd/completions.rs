//! `vigil completions SHELL` and `vigil man`: generated from the clap definitions, so they never
//! drift from the commands (the Debian package installs both).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish (also elvish, powershell).
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write vigil.1 and one page per subcommand (vigil-server.1, ...) into this directory
    /// instead of printing vigil.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut crate::command(), "vigil", &mut out);
    out.flush().context("cannot write the completion script")?;
    Ok(0)
}

pub fn man(args: ManArgs) -> anyhow::Result<i32> {
    let command = crate::command();
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("cannot write manual pages into {}", dir.display()))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            let written = clap_mangen::Man::new(command)
                .render(&mut out)
                .and_then(|()| out.flush());
            match written {
                // `vigil man | head` is not a failure.
                Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other.context("cannot write the manual page")?,
            }
        }
    }
    Ok(0)
}
