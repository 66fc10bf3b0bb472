// Mistakes in a block and in its methods are all reported, each at its token.
use census_runtime::dependency;

struct Orders;

#[dependency(kind = "SQL", colour = "red")]
impl Orders {
    #[dependency(fields(id))]
    fn load(&self, key: u64) -> u64 {
        key
    }

    #[dependency(target = 7)]
    fn save(&self) {}
}

fn main() {}
