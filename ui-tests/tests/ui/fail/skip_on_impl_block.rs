use census_runtime::inproc;

struct Cart;

#[inproc(skip)]
impl Cart {
    fn total(&self) {}
}

fn main() {}
