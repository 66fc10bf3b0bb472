// Free sync functions: names, kinds, target, data, nesting, the site's line, the registry.
use census_runtime::{dependency, inproc};
use census_ui_tests::Capture;

#[inproc]
fn price(quantity: u32) -> u32 {
    load(quantity) * 3
}

#[dependency(
    kind = "SQL",
    target = "orders-db",
    name = "load order",
    data = "SELECT 1"
)]
fn load(quantity: u32) -> u32 {
    quantity + 1
}

/// Docs and other attributes stay.
#[inproc(name = "renamed")]
#[inline]
#[must_use]
pub(crate) fn with_attributes() -> &'static str {
    "kept"
}

#[dependency(kind = "HTTP")] // the target can be set at run time
fn fetch() {
    census_runtime::current_span().set_target("api.example.com");
}

fn main() {
    let capture = Capture::install();
    assert_eq!(price(1), 6);
    assert_eq!(with_attributes(), "kept");
    fetch();

    let price = capture.one("price");
    assert_eq!(price.kind(), "INPROC");
    assert_eq!(price.parent_id(), None);
    assert_eq!(
        price.site().line(),
        6,
        "the line of the fn, not of the attribute"
    );
    assert!(price.site().file().ends_with("sync_free_fn.rs"));
    assert!(price.success());

    let load = capture.one("load order");
    assert_eq!(load.parent_id(), Some(price.span_id()));
    assert_eq!(load.kind(), "SQL");
    assert_eq!(load.target(), Some("orders-db"));
    assert_eq!(load.data(), Some("SELECT 1"));

    capture.one("renamed");
    assert_eq!(capture.one("fetch").target(), Some("api.example.com"));
    assert_eq!(capture.one("fetch").kind(), "HTTP");

    let registered: Vec<&str> = census_runtime::site::sites().map(|site| site.name()).collect();
    for name in ["price", "load order", "renamed", "fetch"] {
        assert!(
            registered.contains(&name),
            "{name} is registered: {registered:?}"
        );
    }
}
