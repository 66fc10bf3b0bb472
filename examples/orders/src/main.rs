//! The census demo. Runs an order service's flow with census installed and prints every
//! operation as a tree, a summary table per operation, then the inventory of instrumented
//! sites.
//!
//! ```text
//! cargo run -p orders
//! ```
//!
//! With `APPLICATIONINSIGHTS_CONNECTION_STRING` set, the same spans, log records and events
//! also go to Application Insights.

use std::process::ExitCode;
use std::time::Duration;

use census_runtime::Sampler;
use census_runtime::azure::AzureExporter;
use census_runtime::export::ConsoleExporter;
use census_runtime::integrations::log::LogBridge;
use census_runtime::integrations::tracing::CensusLayer;
use orders::{SqliteOrders, checkout_session};
use tracing_subscriber::layer::SubscriberExt;

fn main() -> ExitCode {
    // An error (a bad connection string, say) is printed as its message, which names the part
    // that is wrong, rather than as a `Debug` value.
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("orders: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut census = census_runtime::pipeline()
        .sampler(Sampler::always())
        .cloud_role("orders-api")
        // The summary's table comes at the flush below: the flow takes milliseconds.
        .exporter(ConsoleExporter::stdout().summary(Duration::from_secs(60)));
    // With APPLICATIONINSIGHTS_CONNECTION_STRING set, the spans go to Application Insights too,
    // with the standard metrics (requests/duration, dependencies/duration per minute, counted
    // before sampling) that the portal's request and dependency charts read.
    if let Some(azure) = AzureExporter::from_env()? {
        census = census.exporter(azure);
    }
    let census = census.install()?;
    // The service's `log` records and `tracing` spans and events, in the same trees.
    LogBridge::new().level(log::LevelFilter::Info).install()?;
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(CensusLayer::new()),
    )?;

    println!("== operations (one tree per trace, with the log records written in them)");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let repository = SqliteOrders::open_in_memory()?;
    let results = runtime.block_on(checkout_session(&repository));
    census.flush(Duration::from_secs(5))?;

    let failed = results.iter().filter(|r| r.is_err()).count();
    println!(
        "\n== {} orders placed, {failed} refused",
        results.len() - failed
    );

    println!("\n== instrumented sites (known at compile time, listed without running them)");
    let mut sites: Vec<_> = census_runtime::site::sites().collect();
    sites.sort_by_key(|site| (site.file(), site.line()));
    for site in sites {
        println!("{site}");
    }
    Ok(())
}
