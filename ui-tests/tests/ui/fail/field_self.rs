use census_runtime::inproc;

struct Cart(u32);

impl Cart {
    #[inproc(fields(self))]
    fn total(&self) -> u32 {
        self.0
    }
}

fn main() {}
