// The expansion adds no warning to strict user code.
#![deny(
    warnings,
    unused,
    rust_2018_idioms,
    unused_qualifications,
    unreachable_pub
)]
#![deny(clippy::all)]
#![forbid(unsafe_code)]

use census_runtime::{dependency, inproc};

#[inproc]
fn unit() {}

#[inproc]
fn unit_explicit() -> () {}

#[inproc]
fn value(x: u8) -> u8 {
    x
}

#[inproc]
fn early(x: u8) -> Result<u8, std::num::TryFromIntError> {
    if x == 0 {
        return Ok(0);
    }
    let y = i8::try_from(x)?;
    Ok(y.unsigned_abs())
}

#[dependency(kind = "SQL", fields(x))]
async fn later(x: u8) -> Result<u8, String> {
    if x == 0 {
        return Err("zero".into());
    }
    Ok(x)
}

#[inproc]
fn unused_argument(_x: u8, _: u8) {}

#[inproc]
fn mutable(mut x: u8) -> u8 {
    x += 1;
    x
}

#[inproc]
fn pattern((a, b): (u8, u8), [c, ..]: [u8; 2]) -> u8 {
    a + b + c
}

struct S;

#[dependency(kind = "SQL")]
impl S {
    fn method(&self) -> u8 {
        1
    }

    async fn later(&self) -> u8 {
        2
    }
}

mod only_inner {
    // `dependency` is used only inside the block: its import must not be reported unused.
    use census_runtime::{dependency, inproc};

    pub(crate) struct Client;

    #[inproc]
    impl Client {
        #[dependency(kind = "HTTP")]
        pub(crate) fn call(&self) -> u8 {
            1
        }
    }
}

fn main() {
    assert_eq!(only_inner::Client.call(), 1);
    unit();
    unit_explicit();
    assert_eq!(
        value(1) + early(1).unwrap() + mutable(1) + pattern((1, 1), [1, 2]),
        7
    );
    unused_argument(1, 2);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(runtime.block_on(later(1)), Ok(1));
    assert_eq!(S.method() + runtime.block_on(S.later()), 3);
}
