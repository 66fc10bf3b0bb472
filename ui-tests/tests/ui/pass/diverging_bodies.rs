// A body that only panics (or loops) gives the wrapped closure or async block no value to infer
// its type from: functions without a return type must still compile and record the panic.
use census_runtime::inproc;
use census_ui_tests::Capture;

#[inproc]
fn only_panics() {
    panic!("sync boom");
}

#[inproc]
async fn only_panics_async() {
    std::future::ready(()).await;
    panic!("async boom");
}

fn main() {
    let capture = Capture::install();
    assert!(std::panic::catch_unwind(only_panics).is_err());
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(only_panics_async())
    }))
    .is_err());
    let spans = capture.spans();
    for name in ["only_panics", "only_panics_async"] {
        let span = spans.iter().find(|s| s.name() == name).expect(name);
        assert!(!span.success(), "{name} failed");
        assert_eq!(span.result_code(), Some("panic"));
    }
}
