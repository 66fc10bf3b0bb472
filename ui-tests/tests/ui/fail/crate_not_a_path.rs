use census_runtime::inproc;

#[inproc(crate = "telemetry")]
fn price() {}

fn main() {}
