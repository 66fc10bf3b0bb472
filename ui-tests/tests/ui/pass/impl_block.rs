// A whole inherent impl block: every method with a body, named `Type::method`; a method may
// override the block's keys or opt out; `const fn` methods are left alone.
use census_runtime::{dependency, inproc};
use census_ui_tests::Capture;

struct PgOrders<T> {
    rows: Vec<T>,
}

#[dependency(kind = "SQL", target = "orders-db", data = "SELECT * FROM orders")]
impl<T: Clone> PgOrders<T> {
    const LIMIT: usize = 10;

    fn get(&self, index: usize) -> Option<T> {
        self.rows.get(index).cloned()
    }

    #[dependency(name = "orders.count", data = "SELECT count(*) FROM orders")]
    fn count(&self) -> usize {
        self.rows.len()
    }

    #[dependency(kind = "postgresql", fields(row))]
    fn insert(&mut self, row: T) -> usize
    where
        T: std::fmt::Display,
    {
        self.rows.push(row);
        self.rows.len()
    }

    #[inproc]
    fn cached(&self) -> bool {
        true
    }

    #[dependency(skip)]
    fn pool_size(&self) -> usize {
        Self::LIMIT
    }

    const fn limit() -> usize {
        Self::LIMIT
    }
}

#[inproc]
impl Cache {
    fn lookup(&self) -> u8 {
        self.0
    }

    #[dependency(kind = "redis", target = "cache-1")]
    fn refresh(&mut self) {
        self.0 += 1;
    }

    #[inproc(skip)]
    fn raw(&self) -> u8 {
        self.0
    }
}

struct Cache(u8);

fn main() {
    let capture = Capture::install();
    let mut orders = PgOrders { rows: vec![1, 2] };
    assert_eq!(orders.get(1), Some(2));
    assert_eq!(orders.insert(3), 3);
    assert_eq!(orders.count(), 3);
    assert!(orders.cached());
    assert_eq!(orders.pool_size(), 10);
    assert_eq!(PgOrders::<u8>::limit(), 10);
    let mut cache = Cache(0);
    cache.refresh();
    assert_eq!(cache.lookup() + cache.raw(), 2);

    let get = capture.one("PgOrders::get");
    assert_eq!((get.kind(), get.target()), ("SQL", Some("orders-db")));
    assert_eq!(get.data(), Some("SELECT * FROM orders"));

    let count = capture.one("orders.count");
    assert_eq!((count.kind(), count.target()), ("SQL", Some("orders-db")));
    assert_eq!(count.data(), Some("SELECT count(*) FROM orders"));

    let insert = capture.one("PgOrders::insert");
    assert_eq!(
        (insert.kind(), insert.target()),
        ("postgresql", Some("orders-db"))
    );
    assert_eq!(insert.property("row"), Some("3"));

    let cached = capture.one("PgOrders::cached");
    assert_eq!(
        (cached.kind(), cached.target(), cached.data()),
        ("INPROC", None, None)
    );

    let refresh = capture.one("Cache::refresh");
    assert_eq!(
        (refresh.kind(), refresh.target()),
        ("redis", Some("cache-1"))
    );
    assert_eq!(capture.one("Cache::lookup").kind(), "INPROC");

    let names: Vec<String> = capture
        .spans()
        .iter()
        .map(|s| s.name().to_owned())
        .collect();
    assert_eq!(
        names.len(),
        6,
        "skip and const fn are not instrumented: {names:?}"
    );
}
