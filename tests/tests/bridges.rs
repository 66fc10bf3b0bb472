//! What the tests that send log records and `tracing` events share: the process's bridges.

use census_runtime::integrations::log::LogBridge;
use census_runtime::integrations::tracing::CensusLayer;

/// Makes census the process's `log` logger (records at `INFO` and above) and its `tracing`
/// subscriber (a registry with [`CensusLayer`]); once per process, as both are global.
pub fn install() {
    LogBridge::new()
        .level(log::LevelFilter::Info)
        .install()
        .expect("the process's first logger");
    let subscriber = tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        CensusLayer::new(),
    );
    tracing::subscriber::set_global_default(subscriber).expect("the process's first subscriber");
}
