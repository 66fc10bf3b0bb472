//! The `exception` option on functions, async functions and impl blocks, with errors that are
//! `std::error::Error`s and errors that are only `Display`.

use census_runtime::{dependency, inproc};

#[dependency(kind = "SQL", target = "orders-db", exception)]
fn load(id: u32) -> Result<u32, std::io::Error> {
    if id == 0 {
        return Err(std::io::Error::other("no such order"));
    }
    Ok(id)
}

#[inproc(exception)]
async fn price() -> Result<u32, String> {
    Err("no price".to_owned())
}

struct Orders;

#[dependency(kind = "SQL", exception)]
impl Orders {
    fn count(&self) -> Result<usize, std::fmt::Error> {
        Ok(0)
    }

    #[inproc(name = "sum")]
    fn sum(&self) -> u64 {
        0
    }
}

fn main() {
    assert!(load(0).is_err());
    assert_eq!(load(3).unwrap(), 3);
    let _ = price();
    assert_eq!(Orders.count().unwrap(), 0);
    assert_eq!(Orders.sum(), 0);
}
