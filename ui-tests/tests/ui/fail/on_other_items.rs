use census_runtime::{dependency, inproc};

#[inproc]
enum State {
    Open,
}

#[dependency(kind = "SQL")]
const LIMIT: usize = 10;

#[inproc]
static NAME: &str = "census";

#[inproc]
mod inner {}

#[inproc]
use std::fmt;

#[inproc]
type Id = u64;

fn main() {}
