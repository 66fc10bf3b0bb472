use census_runtime::{dependency, inproc};

#[dependency(kind = "SQL", exception = true)]
fn load() -> Result<(), std::io::Error> {
    Ok(())
}

#[inproc(exception("io"))]
fn price() -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {}
