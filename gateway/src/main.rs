//! The `fleetgate` binary: the command line of the library crate ([`fleetgate::run_cli`]).

fn main() -> anyhow::Result<()> {
    fleetgate::run_cli()
}
