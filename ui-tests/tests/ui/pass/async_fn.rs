// Async free functions: the span covers the whole future, across `.await`, and is current on
// every poll, so spans started inside nest under it.
use census_runtime::{dependency, inproc};
use census_ui_tests::Capture;
use std::time::Duration;

#[inproc(fields(order))]
async fn checkout(order: u64) -> Result<u64, std::num::ParseIntError> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let total = load(order).await?;
    tokio::task::yield_now().await;
    if total == 0 {
        return Ok(0);
    }
    Ok(total + "1".parse::<u64>()?)
}

#[dependency(kind = "SQL", target = "orders-db")]
async fn load(order: u64) -> Result<u64, std::num::ParseIntError> {
    tokio::task::yield_now().await;
    format!("{order}0").parse()
}

#[dependency(kind = "SQL")]
async fn broken() -> Result<u64, std::num::ParseIntError> {
    let parsed: u64 = "x".parse()?;
    Ok(parsed)
}

#[inproc]
async fn unit(flag: &mut bool) {
    *flag = true;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let capture = Capture::install();
    assert_eq!(checkout(7).await, Ok(71));
    assert!(broken().await.is_err());
    let mut flag = false;
    unit(&mut flag).await;
    assert!(flag);

    let checkout = capture.one("checkout");
    let load = capture.one("load");
    assert_eq!(load.parent_id(), Some(checkout.span_id()));
    assert_eq!(load.trace_id(), checkout.trace_id());
    assert_eq!(checkout.property("order"), Some("7"));
    assert!(
        checkout.duration() >= Duration::from_millis(5),
        "the span covers the await"
    );
    assert!(checkout.success());

    let broken = capture.one("broken");
    assert!(!broken.success());
    assert_eq!(broken.result_code(), Some("ParseIntError"));
    assert_eq!(
        broken.error_message(),
        Some("invalid digit found in string")
    );
    capture.one("unit");
}
