use census_runtime::inproc;

#[inproc(skip)]
fn price() {}

fn main() {}
