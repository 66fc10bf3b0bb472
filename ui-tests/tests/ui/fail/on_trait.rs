use census_runtime::dependency;

#[dependency(kind = "SQL")]
trait Repository {
    fn load(&self) -> u64;
}

fn main() {}
