// `async fn` in a trait impl, without async-trait.
use census_runtime::dependency;
use census_ui_tests::Capture;

trait Fetch {
    async fn fetch(&self, path: &str) -> Result<usize, std::io::Error>;
}

struct Client;

#[dependency(kind = "HTTP", target = "api.example.com")]
impl Fetch for Client {
    async fn fetch(&self, path: &str) -> Result<usize, std::io::Error> {
        if path.is_empty() {
            return Err(std::io::Error::other("empty path"));
        }
        Ok(path.len())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let capture = Capture::install();
    assert_eq!(Client.fetch("/orders").await.unwrap(), 7);
    assert!(Client.fetch("").await.is_err());
    let spans = capture.spans();
    assert_eq!(spans.len(), 2);
    assert!(
        spans
            .iter()
            .all(|s| s.name() == "Client::fetch" && s.kind() == "HTTP")
    );
    assert_eq!(spans[1].error_message(), Some("empty path"));
    assert_eq!(spans[1].result_code(), Some("Error"));
}
