use census_runtime::{dependency, inproc};

struct Cart;

#[inproc]
impl Cart {
    #[inproc(name = "price")]
    #[dependency(kind = "HTTP")]
    fn price(&self) -> u64 {
        1
    }
}

fn main() {}
