//! How the exporter answers each status of the ingestion endpoint, over real HTTP on loopback.

use std::collections::HashMap;
use std::time::Duration;

use census_runtime::azure::diagnostics;
use census_tests::azure::{install_azure, scratch_dir, settings, spans};
use census_tests::ingestion::{IngestionServer, Reply};

fn names(items: &[serde_json::Value]) -> Vec<String> {
    let mut names: Vec<String> = items
        .iter()
        .filter_map(|v| v["data"]["baseData"]["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// A status the whole batch is sent again for: the second request carries the same envelopes,
/// and each is accepted exactly once.
fn whole_batch_retried(status: u16) {
    let server = IngestionServer::start().unwrap();
    server.script([Reply::status(status)]);
    let census = install_azure(&server, &format!("retry-{status}"));
    let sent = spans("retried", 3);
    census
        .flush(Duration::from_secs(10))
        .expect("delivered after the retry");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one failed request, one retry");
    assert_eq!(requests[0].reply.status, status);
    assert_eq!(names(&requests[0].items), names(&requests[1].items));
    assert_eq!(sorted(server.accepted_names()), sorted(sent));
    let d = diagnostics();
    assert_eq!((d.retried, d.sent, d.dropped_rejected), (3, 3, 0));
}

#[test]
fn status_401_is_retried() {
    whole_batch_retried(401);
}

#[test]
fn status_403_is_retried() {
    whole_batch_retried(403);
}

#[test]
fn status_408_is_retried() {
    whole_batch_retried(408);
}

#[test]
fn status_429_is_retried() {
    whole_batch_retried(429);
}

#[test]
fn status_500_is_retried() {
    whole_batch_retried(500);
}

#[test]
fn status_502_is_retried() {
    whole_batch_retried(502);
}

#[test]
fn status_503_is_retried() {
    whole_batch_retried(503);
}

#[test]
fn status_504_is_retried() {
    whole_batch_retried(504);
}

/// A status the batch is dropped and counted for: no second request.
fn whole_batch_dropped(status: u16) {
    let server = IngestionServer::start().unwrap();
    server.script([Reply::status(status)]);
    let census = install_azure(&server, &format!("drop-{status}"));
    spans("dropped", 3);
    census
        .flush(Duration::from_secs(10))
        .expect("flush completes");
    assert_eq!(
        server.requests().len(),
        1,
        "a refused batch is not sent again"
    );
    let d = diagnostics();
    assert_eq!(
        (d.dropped_rejected, d.retried, d.sent, d.stored),
        (3, 0, 0, 0)
    );
}

#[test]
fn status_400_is_dropped_and_counted() {
    whole_batch_dropped(400);
}

#[test]
fn status_402_is_dropped_and_counted() {
    whole_batch_dropped(402);
}

#[test]
fn status_404_is_dropped_and_counted() {
    whole_batch_dropped(404);
}

#[test]
fn status_439_is_dropped_and_counted() {
    whole_batch_dropped(439);
}

#[test]
fn status_200_delivers_everything_once() {
    let server = IngestionServer::start().unwrap();
    let census = install_azure(&server, "ok");
    let sent = spans("ok", 5);
    census.flush(Duration::from_secs(10)).unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/v2.1/track");
    assert!(
        requests[0]
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(sorted(server.accepted_names()), sorted(sent));
    assert_eq!(diagnostics().sent, 5);
}

/// How long after a first answer of `reply` its batch was sent again.
fn resent_after(reply: Reply, name: &str) -> Duration {
    let server = IngestionServer::start().unwrap();
    server.script([reply]);
    let census = install_azure(&server, name);
    spans(name, 2);
    census.flush(Duration::from_secs(10)).unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one failed request, one resend");
    requests[1].received - requests[0].received
}

#[test]
fn retry_after_is_honoured() {
    // The exporter's own backoff is 50-400 ms here: only Retry-After explains a wait of 2 s.
    let gap = resent_after(Reply::status(429).retry_after(2), "retry-after");
    assert!(
        gap >= Duration::from_millis(1900),
        "resent after {gap:?}, before Retry-After"
    );
}

#[test]
fn retry_after_as_an_http_date_is_honoured() {
    // An HTTP date has whole seconds: four from now is more than three from the answer; the
    // exporter's own backoff here is at most 400 ms.
    let at = std::time::SystemTime::now() + Duration::from_secs(4);
    let reply = Reply::status(503).header("Retry-After", &httpdate::fmt_http_date(at));
    let gap = resent_after(reply, "retry-after-date");
    assert!(
        gap >= Duration::from_millis(2500),
        "resent after {gap:?}, before the date in Retry-After"
    );
}

#[test]
fn partial_success_resends_only_the_retryable_items() {
    let server = IngestionServer::start().unwrap();
    server.script([Reply::partial(&[(1, 500), (3, 400), (4, 429)])]);
    let census = install_azure(&server, "partial");
    // One span per trace, all in one batch, in this order.
    let sent = spans("item", 6);
    census.flush(Duration::from_secs(10)).unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let first = names(&requests[0].items);
    assert_eq!(first.len(), 6);
    let expected_retry = sorted(vec![
        requests[0].items[1]["data"]["baseData"]["name"]
            .as_str()
            .unwrap()
            .to_owned(),
        requests[0].items[4]["data"]["baseData"]["name"]
            .as_str()
            .unwrap()
            .to_owned(),
    ]);
    assert_eq!(
        names(&requests[1].items),
        expected_retry,
        "only items 1 and 4 are resent"
    );
    let rejected = requests[0].items[3]["data"]["baseData"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for name in server.accepted_names() {
        *counts.entry(name).or_default() += 1;
    }
    for name in &sent {
        let expected = usize::from(*name != rejected);
        assert_eq!(counts.get(name).copied().unwrap_or(0), expected, "{name}");
    }
    let d = diagnostics();
    assert_eq!((d.sent, d.retried, d.dropped_rejected), (5, 2, 1));
}

#[test]
fn partial_success_with_unreadable_body_resends_the_whole_batch() {
    let server = IngestionServer::start().unwrap();
    server.script([Reply::status(206).body("this is not json")]);
    let census = install_azure(&server, "partial-garbage");
    spans("unknown", 3);
    census.flush(Duration::from_secs(10)).unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(names(&requests[0].items), names(&requests[1].items));
    assert_eq!(diagnostics().retried, 3);
}

#[test]
fn redirects_307_and_308_are_followed_and_the_new_origin_kept() {
    let final_server = IngestionServer::start().unwrap();
    let middle = IngestionServer::start().unwrap();
    let first = IngestionServer::start().unwrap();
    first.set_default(Reply::status(307).location(&format!("{}/somewhere/else", middle.url())));
    middle.set_default(Reply::status(308).location(&final_server.url()));
    let census = install_azure(&first, "redirect");
    let batch1 = spans("before", 2);
    census.flush(Duration::from_secs(10)).unwrap();
    let batch2 = spans("after", 2);
    census.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(
        first.requests().len(),
        1,
        "later batches go to the new origin"
    );
    assert_eq!(middle.requests().len(), 1);
    assert_eq!(final_server.requests()[0].path, "/v2.1/track");
    let mut all = batch1;
    all.extend(batch2);
    assert_eq!(sorted(final_server.accepted_names()), sorted(all));
}

#[test]
fn a_redirect_loop_stops_after_ten_hops_and_keeps_the_batch() {
    let server = IngestionServer::start().unwrap();
    server.set_default(Reply::status(307).location(&server.url()));
    let dir = scratch_dir("redirect-loop");
    let census = census_runtime::pipeline()
        .exporter(
            settings(&server, &dir)
                .retry_backoff(Duration::from_secs(30), Duration::from_secs(30))
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    spans("looping", 2);
    assert!(
        census.flush(Duration::from_secs(5)).is_err(),
        "not delivered"
    );
    assert_eq!(
        server.requests().len(),
        11,
        "the first request and ten redirects"
    );
    assert_eq!(diagnostics().stored, 2, "kept for later, not lost");
}

#[test]
fn status_413_splits_the_batch_in_halves() {
    let server = IngestionServer::start().unwrap();
    server.script([Reply::status(413)]);
    let census = install_azure(&server, "split");
    let sent = spans("big", 4);
    census.flush(Duration::from_secs(10)).unwrap();
    let sizes: Vec<usize> = server.requests().iter().map(|r| r.items.len()).collect();
    assert_eq!(sizes, [4, 2, 2]);
    assert_eq!(sorted(server.accepted_names()), sorted(sent));
    assert_eq!(diagnostics().dropped_too_large, 0);
}

#[test]
fn status_413_for_a_single_envelope_drops_it() {
    let server = IngestionServer::start().unwrap();
    server.set_default(Reply::status(413));
    let census = install_azure(&server, "too-large");
    spans("huge", 1);
    census.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(server.requests().len(), 1);
    assert_eq!(diagnostics().dropped_too_large, 1);
}

#[test]
fn a_timeout_is_retried() {
    let server = IngestionServer::start().unwrap();
    server.script([Reply::ok().delay(Duration::from_secs(3))]);
    let census = census_runtime::pipeline()
        .exporter(
            settings(&server, &scratch_dir("timeout"))
                .timeout(Duration::from_millis(500))
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    spans("slow", 2);
    census.flush(Duration::from_secs(10)).unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "the timed-out request, then the retry");
    assert_eq!(names(&requests[0].items), names(&requests[1].items));
    let d = diagnostics();
    assert_eq!((d.retried, d.sent), (2, 2));
}

#[test]
fn a_dropped_connection_is_retried() {
    let server = IngestionServer::start().unwrap();
    server.script([Reply::drop_connection()]);
    let census = install_azure(&server, "dropped-connection");
    let sent = spans("cut", 2);
    census.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(server.requests().len(), 2);
    assert_eq!(sorted(server.accepted_names()), sorted(sent));
    assert_eq!(diagnostics().retried, 2);
}

#[test]
fn two_waiting_batches_go_out_at_once_and_each_is_settled_on_its_own() {
    let server = IngestionServer::start().unwrap();
    // The first request to arrive is answered late, and with a failure.
    server.script([Reply::status(503).delay(Duration::from_millis(400))]);
    let census = census_runtime::pipeline()
        .cloud_role("azure-statuses")
        .exporter(
            settings(&server, &scratch_dir("pair"))
                .max_batch(3)
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .expect("the pipeline installs");
    let sent = spans("pair", 6);
    census
        .flush(Duration::from_secs(10))
        .expect("flush completes");
    // The failed batch is kept and sent again after the backoff.
    assert!(
        server.wait_for_accepted(6, Duration::from_secs(10)),
        "every envelope accepted in the end"
    );
    let requests = server.requests();
    assert_eq!(
        requests.len(),
        3,
        "two batches of three, then the failed one again"
    );
    let gap = requests[1].received - requests[0].received;
    assert!(
        gap < Duration::from_millis(300),
        "the second batch went out while the first waited for its answer, not after ({gap:?})"
    );
    assert_eq!(requests[0].reply.status, 503);
    assert_eq!(
        names(&requests[2].items),
        names(&requests[0].items),
        "the batch sent again is the one that failed"
    );
    assert_eq!(sorted(server.accepted_names()), sorted(sent));
    // A flush is answered once the transport has counted the answer to the resent batch.
    census
        .flush(Duration::from_secs(10))
        .expect("flush completes");
    let d = diagnostics();
    assert_eq!((d.retried, d.sent), (3, 6));
}

#[test]
fn full_batches_go_at_once_and_the_rest_waits_for_the_send_interval() {
    let server = IngestionServer::start().unwrap();
    let census = census_runtime::pipeline()
        .cloud_role("azure-statuses")
        .exporter(
            settings(&server, &scratch_dir("partial"))
                .max_batch(3)
                .send_interval(Duration::from_secs(60))
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .expect("the pipeline installs");
    let sent = spans("partial", 7);
    assert!(
        server.wait_for_accepted(6, Duration::from_secs(10)),
        "the two full batches go without waiting for the send interval"
    );
    let requests = server.requests();
    assert_eq!(
        requests.iter().map(|r| r.items.len()).collect::<Vec<_>>(),
        [3, 3],
        "the seventh envelope waits for a fuller batch"
    );
    census
        .flush(Duration::from_secs(10))
        .expect("flush completes");
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        requests[2].items.len(),
        1,
        "a flush sends the partial batch"
    );
    assert_eq!(sorted(server.accepted_names()), sorted(sent));
}
