use census_runtime::{dependency, inproc};

struct Cart;

#[inproc]
impl Cart {
    #[dependency(target = "prices")]
    fn price(&self) -> u64 {
        1
    }
}

fn main() {}
