// Every mistake in one attribute is reported at once, each at its own token.
use census_runtime::dependency;

#[dependency(kind = 5, target = "", colour = "red", fields(), crate = "x")]
fn load(id: u64) -> u64 {
    id
}

fn main() {}
