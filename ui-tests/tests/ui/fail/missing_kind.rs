use census_runtime::dependency;

#[dependency(target = "orders-db")]
fn load() {}

fn main() {}
