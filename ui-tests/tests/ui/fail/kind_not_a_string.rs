use census_runtime::dependency;

#[dependency(kind = 5)]
fn load() {}

fn main() {}
