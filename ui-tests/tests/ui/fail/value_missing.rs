use census_runtime::dependency;

#[dependency(kind)]
fn load() {}

fn main() {}
