//! MongoDB through the `mongodb` driver's command events, against nx-27017, a MongoDB
//! wire-protocol server (`CENSUS_TEST_MONGODB_URL`, started by scripts/services: no MongoDB
//! server can be installed on the test machines).

use std::time::Duration;

use census_runtime::dependency;
use census_tests::azure::{scratch_dir, settings};
use census_tests::db::{assert_child_of, assert_nested_under_repository, base, server_url, unique};
use census_tests::ingestion::IngestionServer;
use census_tests::{flush, install_memory};
use mongodb::bson::{Document, doc};
use mongodb::options::ClientOptions;
use serde_json::Value;

const SECRET: &str = "census-bound-secret-2717";

async fn client() -> mongodb::Client {
    let url = server_url("CENSUS_TEST_MONGODB_URL");
    let mut options = ClientOptions::parse(&url).await.expect("a MongoDB URL");
    options.server_selection_timeout = Some(Duration::from_secs(10));
    census_runtime::integrations::mongodb::install(&mut options);
    mongodb::Client::with_options(options).unwrap()
}

struct Orders {
    orders: mongodb::Collection<Document>,
}

#[dependency(kind = "SQL", target = "orders-db")]
impl Orders {
    async fn add(&self, id: i32, note: &str) -> mongodb::error::Result<()> {
        self.orders
            .insert_one(doc! { "_id": id, "note": note, "qty": 3 })
            .await
            .map(drop)
    }

    async fn by_note(&self, note: &str) -> mongodb::error::Result<Option<Document>> {
        self.orders.find_one(doc! { "note": note }).await
    }

    /// An update operator the server does not know: a write error (code 8 on nx-27017).
    async fn bad_update(&self) -> mongodb::error::Result<()> {
        self.orders
            .update_one(
                doc! { "note": SECRET },
                doc! { "$censusNoSuchOperator": { "qty": 1 } },
            )
            .await
            .map(drop)
    }

    /// An aggregation stage the server does not know: the command fails (`ok: 0`).
    async fn bad_stage(&self) -> mongodb::error::Result<()> {
        self.orders
            .aggregate([doc! { "$censusNoSuchStage": { "note": SECRET } }])
            .await
            .map(drop)
    }

    async fn after_failure(&self) -> mongodb::error::Result<u64> {
        self.orders.count_documents(doc! {}).await
    }
}

#[tokio::test]
async fn envelopes_of_commands_failures_and_nesting() {
    let server = IngestionServer::start().unwrap();
    let census = census_runtime::pipeline()
        .cloud_role("orders-api")
        .exporter(
            settings(&server, &scratch_dir("db-mongodb"))
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    let client = client().await;
    let collection = unique("orders");
    let orders = Orders {
        orders: client.database("census_test").collection(&collection),
    };
    orders.add(1, SECRET).await.unwrap();
    let found = orders
        .by_note(SECRET)
        .await
        .unwrap()
        .expect("the order is found");
    assert_eq!(found.get_i32("_id").unwrap(), 1);
    let duplicate = orders.add(1, "again").await;
    let bad_update = orders.bad_update().await;
    let bad_stage = orders.bad_stage().await;
    assert_eq!(orders.after_failure().await.unwrap(), 1);
    orders.orders.drop().await.unwrap();
    census.flush(Duration::from_secs(10)).unwrap();

    let envelopes = server.items();
    let mongo: Vec<&Value> = envelopes
        .iter()
        .filter(|e| base(e)["type"] == "mongodb")
        .collect();
    let url = server_url("CENSUS_TEST_MONGODB_URL");
    let port = url.rsplit(':').next().unwrap().split('/').next().unwrap();
    for envelope in &mongo {
        assert_eq!(
            base(envelope)["target"],
            format!("127.0.0.1:{port} | census_test")
        );
    }
    let named = |name: &str| -> Vec<&Value> {
        mongo
            .iter()
            .copied()
            .filter(|e| base(e)["name"] == name)
            .collect()
    };
    let inserts = named(&format!("insert {collection}"));
    assert_eq!(inserts.len(), 2, "{mongo:#?}");
    assert!(
        base(inserts[0])["data"]
            .as_str()
            .unwrap()
            .contains(&format!("\"insert\": \"{collection}\"")),
        "{}",
        base(inserts[0])["data"]
    );
    assert_eq!(base(inserts[0])["success"], true);
    let find = named(&format!("find {collection}"));
    assert_eq!(find.len(), 1);
    assert!(
        base(find[0])["data"]
            .as_str()
            .unwrap()
            .contains("\"note\": \"?\"")
    );

    // The failures: a duplicate key, an unknown command.
    assert!(duplicate.is_err(), "nx-27017 refuses a duplicate _id");
    assert_eq!(base(inserts[1])["success"], false);
    assert_eq!(base(inserts[1])["resultCode"], "11000");
    assert!(bad_update.is_err());
    let update = named(&format!("update {collection}"));
    assert_eq!(update.len(), 1);
    assert_eq!(base(update[0])["success"], false);
    assert_eq!(base(update[0])["resultCode"], "8");
    assert!(bad_stage.is_err());
    let aggregates = named(&format!("aggregate {collection}"));
    assert_eq!(aggregates.len(), 2, "the failed stage and count_documents");
    assert_eq!(base(aggregates[0])["success"], false);
    assert!(
        base(aggregates[0])["data"]
            .as_str()
            .unwrap()
            .contains("$censusNoSuchStage")
    );

    assert_eq!(base(aggregates[1])["success"], true);
    let requests = server.requests();
    assert_nested_under_repository(
        &envelopes,
        mongo
            .iter()
            .copied()
            .filter(|e| !base(e)["name"].as_str().unwrap().starts_with("drop")),
        aggregates[1],
        requests.iter().map(|r| r.body.as_slice()),
        SECRET,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_from_many_tasks_keep_their_parents() {
    let (pipeline, memory) = install_memory();
    let client = client().await;
    let collection: mongodb::Collection<Document> =
        client.database("census_test").collection(&unique("tasks"));
    let mut tasks = Vec::new();
    for task in 0..16_i32 {
        let collection = collection.clone();
        tasks.push(tokio::spawn(
            census_runtime::span(format!("task {task}")).instrument(async move {
                for round in 0..3 {
                    collection
                        .insert_one(doc! { "task": task, "round": round })
                        .await
                        .unwrap();
                }
            }),
        ));
    }
    for task in tasks {
        task.await.unwrap();
    }
    collection.drop().await.unwrap();
    flush(&pipeline);
    let spans = memory.spans();
    for task in 0..16 {
        let parent = memory.one(&format!("task {task}"));
        let children: Vec<_> = spans
            .iter()
            .filter(|s| s.kind() == "mongodb" && s.parent_id() == Some(parent.span_id()))
            .collect();
        assert_eq!(
            children.len(),
            3,
            "task {task}'s three inserts are its children"
        );
        for child in children {
            assert_child_of(child, &parent);
        }
    }
}
