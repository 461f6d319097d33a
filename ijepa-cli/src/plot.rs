//! `ijepa-cli plot`: redraws a run's curves from its `metrics.csv`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use ijepa_train::report::plot::Scale;

/// Options of `ijepa-cli plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The run directory (with `metrics.csv`).
    run: PathBuf,
    /// Loss axis in powers of ten (a loss that falls by decades).
    #[arg(long)]
    log: bool,
}

/// Runs `ijepa-cli plot`.
pub fn run(args: &PlotArgs) -> Result<()> {
    let rows = ijepa_train::report::metrics::read_rows(&args.run)?;
    anyhow::ensure!(
        !rows.is_empty(),
        "{}: no steps logged yet",
        args.run.join("metrics.csv").display()
    );
    let scale = if args.log { Scale::Log } else { Scale::Linear };
    ijepa_train::report::plot::draw(&rows, &args.run, scale)?;
    for f in ["loss.png", "loss.svg", "metrics.png", "metrics.svg"] {
        println!("{}", args.run.join(f).display());
    }
    Ok(())
}
