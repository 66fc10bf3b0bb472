use census_runtime::dependency;

#[dependency(kind = "SQL", target = "orders-db", kind = "HTTP")]
fn load() {}

fn main() {}
