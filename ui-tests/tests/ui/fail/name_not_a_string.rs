use census_runtime::inproc;

#[inproc(name = price)]
fn price() {}

fn main() {}
