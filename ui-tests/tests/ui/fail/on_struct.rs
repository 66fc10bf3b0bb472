use census_runtime::inproc;

#[inproc]
struct Cart {
    items: Vec<u32>,
}

fn main() {}
