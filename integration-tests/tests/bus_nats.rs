//! The NATS push bus against a real NATS server: the same conformance checks the in-process bus
//! passes.

use janus_broker::bus::{NatsBus, conformance};

#[tokio::test]
async fn nats_bus_meets_the_push_bus_contract() {
    let nats = janus_integration_tests::nats().await;
    let bus = NatsBus::connect(&format!("nats://{}", nats.addr), "conformance")
        .await
        .unwrap();
    conformance::run(&bus).await;
}
