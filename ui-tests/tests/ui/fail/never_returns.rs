use census_runtime::inproc;

#[inproc]
fn serve() -> ! {
    loop {}
}

fn main() {}
