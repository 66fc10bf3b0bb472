use census_runtime::inproc;

#[inproc(fields(items))]
fn total(items: Vec<u32>) -> u32 {
    items.iter().sum()
}

fn main() {}
