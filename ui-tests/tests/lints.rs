//! Instrumented functions of every shape under strict rustc and clippy lints: `cargo clippy
//! --all-targets -- -D warnings` on this package fails if the expansion makes user code warn.

#![deny(
    warnings,
    unused,
    rust_2018_idioms,
    unused_qualifications,
    unreachable_pub
)]
#![forbid(unsafe_code)]
#![deny(clippy::all, clippy::pedantic, clippy::nursery)]
#![allow(clippy::unused_async, clippy::unnecessary_wraps)] // the shapes below are on purpose

use census_runtime::{dependency, inproc};
use std::pin::Pin;

#[inproc]
fn unit() {}

#[inproc(fields(x))]
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

#[inproc]
fn iterate(limit: u8) -> impl Iterator<Item = u8> {
    0..limit
}

#[dependency(kind = "SQL", target = "orders-db", fields(x))]
async fn later(x: u8) -> Result<u8, String> {
    if x == 0 {
        return Err("zero".into());
    }
    Ok(x)
}

struct Store {
    items: Vec<u8>,
}

#[dependency(kind = "SQL")]
impl Store {
    fn get(&self, index: usize) -> Option<u8> {
        self.items.get(index).copied()
    }

    fn items_mut(&mut self) -> &mut Vec<u8> {
        &mut self.items
    }

    fn pinned(self: Pin<&mut Self>) -> usize {
        self.items.len()
    }

    fn boxed(self: Box<Self>) -> Vec<u8> {
        self.items
    }

    async fn count(&self) -> usize {
        self.items.len()
    }

    #[dependency(skip)]
    const fn empty() -> Self {
        Self { items: Vec::new() }
    }
}

#[async_trait::async_trait]
trait Load {
    async fn load(&self) -> Result<u8, String>;
}

#[async_trait::async_trait]
#[dependency(kind = "HTTP")]
impl Load for Store {
    async fn load(&self) -> Result<u8, String> {
        self.items
            .first()
            .copied()
            .ok_or_else(|| "empty".to_owned())
    }
}

#[test]
fn every_shape_runs() {
    unit();
    assert_eq!(value(1) + early(1).unwrap() + iterate(2).sum::<u8>(), 3);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(runtime.block_on(later(1)), Ok(1));
    let mut store = Store::empty();
    store.items_mut().push(4);
    assert_eq!(store.get(0), Some(4));
    assert_eq!(Pin::new(&mut store).pinned(), 1);
    assert_eq!(runtime.block_on(store.count()), 1);
    assert_eq!(runtime.block_on(store.load()), Ok(4));
    assert_eq!(Box::new(store).boxed(), [4]);
}
