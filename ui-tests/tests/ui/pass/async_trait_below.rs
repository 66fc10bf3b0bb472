// Our attribute below `#[async_trait]`, and on single methods of an `#[async_trait]` impl: they
// see what async-trait expands to (`fn ... { Box::pin(async move { ... }) }`) and instrument the
// boxed future.
use async_trait::async_trait;
use census_runtime::{dependency, inproc};
use census_ui_tests::Capture;

#[async_trait]
trait Store {
    async fn load(&self, id: u64) -> Result<String, std::fmt::Error>;
    async fn save(&mut self, value: String) -> usize;
}

struct Memory(Vec<String>);
struct Other(Vec<String>);

#[async_trait]
#[dependency(kind = "SQL", target = "orders-db")]
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

#[async_trait]
impl Store for Other {
    #[dependency(kind = "SQL", target = "other-db")]
    async fn load(&self, id: u64) -> Result<String, std::fmt::Error> {
        if id > 10 {
            return Err(std::fmt::Error);
        }
        Ok(self.0.join(","))
    }

    #[inproc(name = "other save", fields(value))]
    async fn save(&mut self, value: String) -> usize {
        self.0.push(value);
        self.0.len()
    }
}

#[inproc]
async fn handler(store: &mut (dyn Store + Send)) -> usize {
    store.save("tea".to_owned()).await;
    store.load(0).await.map(|v| v.len()).unwrap_or(0) + store.load(50).await.map_or(0, |_| 1)
}

#[tokio::main]
async fn main() {
    let capture = Capture::install();
    let len = tokio::spawn(async move {
        handler(&mut Memory(Vec::new())).await + handler(&mut Other(Vec::new())).await
    })
    .await
    .unwrap();
    assert_eq!(len, 6);

    let handlers: Vec<_> = capture
        .spans()
        .into_iter()
        .filter(|s| s.name() == "handler")
        .collect();
    assert_eq!(handlers.len(), 2);
    let save = capture.one("Memory::save");
    assert_eq!(save.parent_id(), Some(handlers[0].span_id()));
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
    assert!(loads[0].success() && !loads[1].success());

    let other_save = capture.one("other save");
    assert_eq!(other_save.parent_id(), Some(handlers[1].span_id()));
    assert_eq!(other_save.property("value"), Some("tea"));
    let other_loads: Vec<_> = capture
        .spans()
        .into_iter()
        .filter(|s| s.name() == "load")
        .collect();
    assert_eq!(other_loads.len(), 2);
    assert_eq!(other_loads[0].target(), Some("other-db"));
    assert!(other_loads[0].success() && !other_loads[1].success());
    assert!(
        other_loads
            .iter()
            .all(|s| s.parent_id() == Some(handlers[1].span_id()))
    );
}
