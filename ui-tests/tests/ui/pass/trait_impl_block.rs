// A trait impl block, with an override and an opt-out; a generic trait and a reference self type.
use census_runtime::{dependency, inproc};
use census_ui_tests::Capture;

trait Repository {
    fn get(&self, id: u64) -> Result<u64, String>;
    fn put(&mut self, id: u64) -> Result<(), String>;
    fn size(&self) -> usize;
    fn name(&self) -> &'static str {
        "repository"
    }
}

struct Memory(Vec<u64>);

#[dependency(kind = "SQL", target = "orders-db")]
impl Repository for Memory {
    fn get(&self, id: u64) -> Result<u64, String> {
        self.0
            .iter()
            .copied()
            .find(|&x| x == id)
            .ok_or_else(|| format!("no order {id}"))
    }

    #[dependency(kind = "HTTP", target = "audit", fields(id))]
    fn put(&mut self, id: u64) -> Result<(), String> {
        self.0.push(id);
        Ok(())
    }

    #[dependency(skip)]
    fn size(&self) -> usize {
        self.0.len()
    }
}

trait Render<T> {
    fn render(&self, value: T) -> String;
}

#[inproc]
impl<'a, T: std::fmt::Debug> Render<T> for &'a Memory {
    fn render(&self, value: T) -> String {
        format!("{value:?}")
    }
}

fn main() {
    let capture = Capture::install();
    let mut memory = Memory(vec![1]);
    memory.put(2).unwrap();
    assert_eq!(memory.get(2), Ok(2));
    assert_eq!(memory.get(9), Err("no order 9".to_owned()));
    assert_eq!(memory.size(), 2);
    assert_eq!(memory.name(), "repository");
    assert_eq!((&memory).render(5), "5");

    let put = capture.one("Memory::put");
    assert_eq!((put.kind(), put.target()), ("HTTP", Some("audit")));
    assert_eq!(put.property("id"), Some("2"));

    let gets = capture
        .spans()
        .into_iter()
        .filter(|s| s.name() == "Memory::get")
        .collect::<Vec<_>>();
    assert_eq!(gets.len(), 2);
    assert!(gets[0].success());
    assert!(!gets[1].success());
    assert_eq!(gets[1].error_message(), Some("no order 9"));
    assert_eq!(gets[1].result_code(), Some("String"));
    assert_eq!(capture.one("Memory::render").kind(), "INPROC");
    assert_eq!(capture.spans().len(), 4);
}
