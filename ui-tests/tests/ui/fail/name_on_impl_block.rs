use census_runtime::inproc;

struct Cart;

#[inproc(name = "cart", fields(id))]
impl Cart {
    fn total(&self, id: u64) -> u64 {
        id
    }
}

fn main() {}
