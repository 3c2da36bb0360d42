use crate::Run;

#[derive(clap::Args)]
pub struct Args {}

impl Run for Args {
    fn run(self) -> anyhow::Result<()> {
        print!("{}", tollgate_domain::catalog::json_schema());
        Ok(())
    }
}
