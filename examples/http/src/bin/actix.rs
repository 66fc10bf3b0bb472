//! An actix-web app behind the census middleware, on 127.0.0.1, called by a ureq client with
//! the census middleware: the app's Request continues the client's trace. A panicking handler
//! answers 500 and is recorded with its Exception. Every operation is printed as a tree.
//!
//! ```text
//! cargo run -p http-demo --bin actix
//! ```

use std::process::ExitCode;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use census_runtime::azure::AzureExporter;
use census_runtime::export::ConsoleExporter;
use census_runtime::integrations::actix_web::ActixMiddleware;
use census_runtime::integrations::ureq::UreqMiddleware;
use census_runtime::{Sampler, inproc};

#[inproc]
fn look_up(id: u64) -> String {
    format!("order {id}")
}

async fn order(id: web::Path<u64>) -> String {
    look_up(*id)
}

async fn broken() -> String {
    panic!("this handler always fails")
}

#[inproc]
fn client(base: &str) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .middleware(UreqMiddleware::new())
        .http_status_as_error(false)
        .build()
        .into();
    for path in ["/orders/7", "/broken", "/missing"] {
        match agent.get(&format!("{base}{path}")).call() {
            Ok(response) => println!("GET {path} -> {}", response.status()),
            Err(error) => println!("GET {path} -> {error}"),
        }
    }
}

fn main() -> ExitCode {
    // An error (a bad connection string, say) is printed as its message, which names the part
    // that is wrong, rather than as a `Debug` value.
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("actix: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    // `/broken` panics on purpose: one line says so, rather than a backtrace when
    // RUST_BACKTRACE is set. census chains its own hook to this one when installed.
    std::panic::set_hook(Box::new(|info| eprintln!("(as meant) {info}")));
    let mut census = census_runtime::pipeline()
        .sampler(Sampler::always())
        .cloud_role("actix-demo")
        .exporter(ConsoleExporter::stdout());
    // With APPLICATIONINSIGHTS_CONNECTION_STRING set, the spans go to Application Insights too.
    if let Some(azure) = AzureExporter::from_env()? {
        census = census.exporter(azure);
    }
    let census = census.install()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = HttpServer::new(|| {
        App::new()
            .wrap(ActixMiddleware::new())
            .route("/orders/{id}", web::get().to(order))
            .route("/broken", web::get().to(broken))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    let system = std::thread::spawn(move || actix_web::rt::System::new().block_on(server));

    client(&base);
    census.flush(Duration::from_secs(5))?;

    actix_web::rt::System::new().block_on(handle.stop(true));
    system.join().map_err(|_| "the server thread panicked")??;
    Ok(())
}
