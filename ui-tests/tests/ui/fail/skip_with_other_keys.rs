use census_runtime::dependency;

struct Orders;

#[dependency(kind = "SQL")]
impl Orders {
    #[dependency(skip, name = "orders.size")]
    fn size(&self) -> usize {
        0
    }
}

fn main() {}
