// `unsafe fn`: the body keeps its unsafe context (edition 2024: unsafe operations still need an
// `unsafe` block, and a crate that allows `unsafe_op_in_unsafe_fn` may still leave it out).
#![allow(unsafe_op_in_unsafe_fn)]
use census_runtime::inproc;
use census_ui_tests::Capture;

#[inproc]
unsafe fn read(pointer: *const u32) -> u32 {
    *pointer
}

#[inproc]
unsafe fn read_blocked(pointer: *const u32) -> u32 {
    unsafe { *pointer + 1 }
}

struct Raw(*mut u32);

#[inproc]
impl Raw {
    unsafe fn bump(&mut self) -> &mut u32 {
        *self.0 += 1;
        &mut *self.0
    }

    unsafe extern "C" fn c_abi(value: u32) -> u32 {
        value
    }
}

#[inproc]
async unsafe fn read_later(pointer: *const u32) -> u32 {
    *pointer
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let capture = Capture::install();
    let mut value = 41;
    let mut raw = Raw(&mut value);
    unsafe {
        *raw.bump() += 0;
        assert_eq!(read(&value), 42);
        assert_eq!(read_blocked(&value), 43);
        assert_eq!(Raw::c_abi(1), 1);
        assert_eq!(read_later(&value).await, 42);
    }
    for name in [
        "read",
        "read_blocked",
        "Raw::bump",
        "Raw::c_abi",
        "read_later",
    ] {
        capture.one(name);
    }
}
