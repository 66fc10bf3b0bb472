use census_runtime::dependency;

trait Repository {
    #[dependency(kind = "SQL")]
    fn load(&self) -> u64;
}

fn main() {}
