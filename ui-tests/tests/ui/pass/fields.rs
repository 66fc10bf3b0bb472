// `fields(...)` records the named arguments by `Display`, whatever their type; nothing else is
// recorded; a raw identifier is recorded by its name.
use census_runtime::{dependency, inproc};
use census_ui_tests::Capture;
use std::fmt;
use std::net::Ipv4Addr;

struct UserId(u32);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "user-{}", self.0)
    }
}

#[dependency(
    kind = "HTTP",
    fields(id, name, owned, user, ip, r#type, by_ref, ratio)
)]
#[allow(clippy::too_many_arguments)]
fn call(
    id: u64,
    name: &str,
    owned: String,
    user: UserId,
    ip: Ipv4Addr,
    r#type: char,
    by_ref: &&i32,
    ratio: f64,
    secret: &str,
) -> usize {
    name.len()
        + owned.len()
        + secret.len()
        + id as usize
        + user.0 as usize
        + ip.octets().len()
        + r#type.len_utf8()
        + **by_ref as usize
        + ratio as usize
}

#[inproc(fields(value))]
fn consumed(value: String) -> String {
    value + "!"
}

fn main() {
    let capture = Capture::install();
    let three = &3;
    call(
        1,
        "ann",
        "own".into(),
        UserId(7),
        Ipv4Addr::LOCALHOST,
        'x',
        &three,
        0.5,
        "hunter2",
    );
    assert_eq!(consumed("moved".into()), "moved!");

    let call = capture.one("call");
    let properties: Vec<(&str, &str)> = call.properties().collect();
    assert_eq!(
        properties,
        [
            ("id", "1"),
            ("name", "ann"),
            ("owned", "own"),
            ("user", "user-7"),
            ("ip", "127.0.0.1"),
            ("type", "x"),
            ("by_ref", "3"),
            ("ratio", "0.5"),
        ]
    );
    assert_eq!(
        call.property("secret"),
        None,
        "only the named arguments are recorded"
    );
    assert_eq!(call.site().fields().len(), 8);
    assert_eq!(capture.one("consumed").property("value"), Some("moved"));
}
