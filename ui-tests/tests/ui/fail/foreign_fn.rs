use census_runtime::inproc;

unsafe extern "C" {
    #[inproc]
    fn abs(value: i32) -> i32;
}

fn main() {}
