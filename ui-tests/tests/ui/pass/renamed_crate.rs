// census renamed: `crate = path` tells the expansion where to find the runtime.
extern crate census_runtime as telemetry;

use census_ui_tests::Capture;

mod inner {
    #[telemetry::inproc(crate = telemetry)]
    pub fn work() -> u8 {
        1
    }

    pub struct Db;

    #[telemetry::dependency(kind = "SQL", crate = ::telemetry)]
    impl Db {
        pub fn query(&self) -> u8 {
            2
        }

        #[telemetry::dependency(skip)]
        pub fn idle(&self) -> u8 {
            0
        }
    }

    #[telemetry::inproc(crate = crate::reexport)]
    pub async fn later() -> u8 {
        3
    }
}

mod reexport {
    pub use telemetry::*;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let capture = Capture::install();
    assert_eq!(
        inner::work() + inner::Db.query() + inner::Db.idle() + inner::later().await,
        6
    );
    capture.one("work");
    assert_eq!(capture.one("Db::query").kind(), "SQL");
    capture.one("later");
    assert_eq!(capture.spans().len(), 3);
}
