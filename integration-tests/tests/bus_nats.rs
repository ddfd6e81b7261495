//! The NATS push bus against a real NATS server: the same conformance checks the in-process bus
//! passes, and `janus push --nats` reaching a player through it.

use janus_broker::bus::{NatsBus, conformance};
use janus_integration_tests::janus_binary;
use janus_integration_tests::stack::{COLOR, Stack, recv};

#[tokio::test]
async fn nats_bus_meets_the_push_bus_contract() {
    let nats = janus_integration_tests::nats().await;
    let bus = NatsBus::connect(&format!("nats://{}", nats.addr), "conformance")
        .await
        .unwrap();
    conformance::run(&bus).await;
    conformance::send_tells(&bus).await;
    conformance::answers_when_held(&bus).await;
}

/// `janus push --nats`, run as an operator runs it, reaches a player on a broker whose bus is
/// that NATS (the binary: `cargo build -p janus-cli`).
#[tokio::test]
async fn janus_push_over_nats_reaches_a_session() {
    let stack = Stack::start(|_| {}).await;
    let mut client = stack.client(&stack.tcp(), 4242).await;
    let nats = stack.ground.nats.as_ref().expect("the stack runs on NATS");
    let output = tokio::process::Command::new(janus_binary())
        .args([
            "push",
            "--uid",
            "4242",
            "--color",
            COLOR,
            "--text",
            "over nats",
        ])
        .args(["--module", "9", "--nats", &format!("nats://{}", nats.addr)])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let packet = recv(&mut client).await;
    assert_eq!((packet.r#mod, &packet.data[..]), (9, &b"over nats"[..]));
}
