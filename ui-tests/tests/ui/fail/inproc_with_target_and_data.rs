use census_runtime::inproc;

#[inproc(target = "orders-db", data = "SELECT 1")]
fn load() {}

fn main() {}
