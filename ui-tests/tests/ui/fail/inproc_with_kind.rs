use census_runtime::inproc;

#[inproc(kind = "SQL")]
fn load() {}

fn main() {}
