use census_runtime::inproc;

#[inproc(fields = "id")]
fn price(id: u64) -> u64 {
    id
}

fn main() {}
