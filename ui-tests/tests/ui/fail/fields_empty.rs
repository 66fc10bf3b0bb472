use census_runtime::inproc;

#[inproc(fields())]
fn price(id: u64) -> u64 {
    id
}

fn main() {}
