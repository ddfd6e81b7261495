//! The NATS push bus against a real NATS server: the same conformance checks the in-process bus
//! passes, and `janus push --nats` reaching a player through it.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use janus_broker::bus::{Confirm, NatsBus, PushBus, Sent, conformance};
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
    // The broker answered once the edge held it, with the uids pushed.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("pushed to [4242]"), "{stdout}");
}

/// A request on a queue-group subscription made with `subscribe_answering` waits for the
/// receiver's answer and gets its payload (the ingress subject's `Janus-Confirm: held`).
#[tokio::test]
async fn an_answering_queue_group_member_answers_with_a_payload() {
    let nats = janus_integration_tests::nats().await;
    let bus = NatsBus::connect(&format!("nats://{}", nats.addr), "answers")
        .await
        .unwrap();
    let subject = "answers.queue";
    let mut members = Vec::new();
    for _ in 0..2 {
        members.push(bus.subscribe_answering(subject, Some("g")).await.unwrap());
    }
    let request = bus.request(
        subject,
        Bytes::from_static(b"q"),
        Confirm::Held,
        Duration::from_secs(10),
    );
    let answering = async {
        let mut streams = futures_util::stream::select_all(members);
        let incoming = streams.next().await.unwrap();
        assert_eq!(&incoming.payload[..], b"q");
        (incoming.reply.expect("the sender waits"))(Bytes::from_static(b"a")).await;
        tokio::time::timeout(Duration::from_millis(500), streams.next()).await
    };
    let (answer, second) = tokio::join!(request, answering);
    assert_eq!(answer.unwrap().unwrap(), Bytes::from_static(b"a"));
    assert!(second.is_err(), "one member of the group took it");
    let none = bus.request(
        "answers.nobody",
        Bytes::new(),
        Confirm::Held,
        Duration::from_secs(5),
    );
    assert_eq!(none.await.unwrap(), Err(Sent::NoSubscriber));
}
