use census_runtime::dependency;

struct Orders;

#[dependency]
impl Orders {
    fn load(&self) {}
}

fn main() {}
