use census_runtime::inproc;

#[inproc]
pub const fn limit() -> usize {
    10
}

fn main() {}
