// `impl Trait` in return position, alone and nested in a `Result`, sync and async, with `?`.
use census_runtime::inproc;
use census_ui_tests::Capture;
use std::fmt::Display;

#[inproc]
fn evens(limit: u32) -> impl Iterator<Item = u32> {
    (0..limit).filter(|n| n % 2 == 0)
}

#[inproc]
fn parse(text: &str) -> Result<impl Display, std::num::ParseIntError> {
    let value: i64 = text.parse()?;
    Ok(value * 2)
}

#[inproc]
fn boxed(flag: bool) -> Box<dyn Fn(u8) -> u8> {
    if flag {
        return Box::new(|x| x + 1);
    }
    Box::new(|x| x)
}

#[inproc]
async fn later(text: &str) -> Result<impl Display + use<>, std::num::ParseIntError> {
    let value: u8 = text.parse()?;
    Ok(value)
}

#[inproc]
fn closure(offset: u8) -> impl Fn(u8) -> u8 {
    move |x| x + offset
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let capture = Capture::install();
    assert_eq!(evens(5).collect::<Vec<_>>(), [0, 2, 4]);
    assert_eq!(parse("21").unwrap().to_string(), "42");
    assert!(parse("x").is_err());
    assert_eq!(boxed(true)(1), 2);
    assert_eq!(later("7").await.unwrap().to_string(), "7");
    assert_eq!(closure(1)(1), 2);
    let parses: Vec<_> = capture
        .spans()
        .into_iter()
        .filter(|s| s.name() == "parse")
        .collect();
    assert!(parses[0].success());
    assert!(
        !parses[1].success(),
        "an `Err` behind `impl Display` still fails the span"
    );
    capture.one("evens");
    capture.one("later");
}
