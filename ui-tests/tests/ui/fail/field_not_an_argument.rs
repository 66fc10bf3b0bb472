use census_runtime::inproc;

#[inproc(fields(id, user))]
fn price(id: u64, quantity: u32) -> u64 {
    id * u64::from(quantity)
}

fn main() {}
