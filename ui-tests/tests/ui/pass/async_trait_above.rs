// Our attribute above `#[async_trait]`: it sees `async fn`s and wraps their bodies; async-trait
// then boxes them. Spans start when the future is first polled and nest across `.await`.
use async_trait::async_trait;
use census_runtime::{dependency, inproc};
use census_ui_tests::Capture;

#[async_trait]
trait Store {
    async fn load(&self, id: u64) -> Result<String, std::fmt::Error>;
    async fn save(&mut self, value: String) -> usize;
}

struct Memory(Vec<String>);

#[dependency(kind = "SQL", target = "orders-db")]
#[async_trait]
impl Store for Memory {
    async fn load(&self, id: u64) -> Result<String, std::fmt::Error> {
        tokio::task::yield_now().await;
        let value = self.0.get(id as usize).cloned().ok_or(std::fmt::Error)?;
        Ok(value)
    }

    #[inproc(fields(value))]
    async fn save(&mut self, value: String) -> usize {
        self.0.push(value);
        tokio::task::yield_now().await;
        self.0.len()
    }
}

#[inproc]
async fn handler(store: &mut Memory) -> usize {
    store.save("tea".to_owned()).await;
    store.load(0).await.map(|v| v.len()).unwrap_or(0) + store.load(5).await.map_or(0, |_| 1)
}

#[tokio::main]
async fn main() {
    let capture = Capture::install();
    let mut store = Memory(Vec::new());
    // Futures from async-trait are `Send`: spawn one on the multi-threaded runtime.
    let len = tokio::spawn(async move { handler(&mut store).await })
        .await
        .unwrap();
    assert_eq!(len, 3);

    let handler = capture.one("handler");
    let save = capture.one("Memory::save");
    assert_eq!(save.parent_id(), Some(handler.span_id()));
    assert_eq!(
        (save.kind(), save.property("value")),
        ("INPROC", Some("tea"))
    );
    let loads: Vec<_> = capture
        .spans()
        .into_iter()
        .filter(|s| s.name() == "Memory::load")
        .collect();
    assert_eq!(loads.len(), 2);
    assert!(
        loads
            .iter()
            .all(|s| s.parent_id() == Some(handler.span_id()))
    );
    assert!(loads[0].success());
    assert!(!loads[1].success());
    assert_eq!(loads[1].target(), Some("orders-db"));
}
