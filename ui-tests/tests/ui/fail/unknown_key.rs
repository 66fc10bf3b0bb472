use census_runtime::inproc;

#[inproc(nmae = "price")]
fn price() {}

fn main() {}
