use census_runtime::dependency;

#[dependency(kind = "SQL", target = "")]
fn load() {}

fn main() {}
