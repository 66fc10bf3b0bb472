// Outcome: `Err` fails the span (any alias of `Result`: io::Result, anyhow::Result, a local
// alias) with the error's Display and type; `?` and early `return` work; a panic fails the span
// and goes on unwinding; an `Err` whose error is not `Display` is left alone.
use census_runtime::{dependency, inproc};
use census_ui_tests::Capture;
use std::io;

type Outcome<T> = Result<T, MyError>;

#[derive(Debug)]
struct MyError;

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("my error")
    }
}

#[dependency(kind = "file", target = "/etc")]
fn read(path: &str) -> io::Result<String> {
    if path.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no path"));
    }
    let text = std::fs::read_to_string(path)?;
    Ok(text)
}

#[inproc]
fn with_anyhow(fail: bool) -> anyhow::Result<u8> {
    if fail {
        anyhow::bail!("it failed");
    }
    let value: u8 = "7".parse()?;
    Ok(value)
}

#[inproc]
fn with_alias(fail: bool) -> Outcome<u8> {
    if fail { Err(MyError) } else { Ok(1) }
}

#[inproc]
fn not_display() -> Result<u8, ()> {
    Err(())
}

#[inproc]
fn option() -> Option<u8> {
    None
}

#[inproc]
fn boom(value: u8) -> u8 {
    if value > 0 {
        panic!("boom {value}");
    }
    value
}

#[inproc]
async fn boom_later() -> u8 {
    tokio::task::yield_now().await;
    panic!("later")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Quiet panics; the runtime's hook chains to this one.
    std::panic::set_hook(Box::new(|_| {}));
    let capture = Capture::install();
    assert!(read("").is_err());
    assert!(read("/definitely/not/here").is_err());
    assert!(with_anyhow(true).is_err());
    assert_eq!(with_anyhow(false).unwrap(), 7);
    assert!(with_alias(true).is_err());
    assert!(not_display().is_err());
    assert!(option().is_none());
    let panicked = std::panic::catch_unwind(|| boom(1));
    assert!(panicked.is_err(), "the panic continues");
    let task = tokio::spawn(boom_later());
    assert!(task.await.unwrap_err().is_panic());

    let reads: Vec<_> = capture
        .spans()
        .into_iter()
        .filter(|s| s.name() == "read")
        .collect();
    assert_eq!(reads[0].error_message(), Some("no path"));
    assert_eq!(reads[0].result_code(), Some("Error"));
    assert!(!reads[1].success());

    let anyhows: Vec<_> = capture
        .spans()
        .into_iter()
        .filter(|s| s.name() == "with_anyhow")
        .collect();
    assert_eq!(anyhows[0].error_message(), Some("it failed"));
    assert!(anyhows[1].success());

    let alias = capture.one("with_alias");
    assert_eq!(
        (alias.error_message(), alias.result_code()),
        (Some("my error"), Some("MyError"))
    );
    assert!(capture.one("not_display").success());
    assert!(capture.one("option").success());

    let boom = capture.one("boom");
    assert!(!boom.success());
    assert_eq!(boom.error_message(), Some("boom 1"));
    assert_eq!(boom.result_code(), Some("panic"));
    assert!(!capture.one("boom_later").success());
}
