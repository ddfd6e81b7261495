//! Real infrastructure: Redis, NATS and etcd containers started with
//! testcontainers from the images `deploy/images.sh ensure` names (`JANUS_REDIS_IMAGE`,
//! `JANUS_REDIS_OLD_IMAGE`, `JANUS_NATS_IMAGE`, `JANUS_ETCD_IMAGE`; official images by default,
//! local builds from Debian packages where no registry answers). Nothing here is a mock: a suite that cannot start a
//! container fails with the command that fixes it.

use std::time::Duration;

use testcontainers::core::{ContainerPort, IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// A started container and the address its service answers on from the host.
pub struct Service {
    /// `host:port` of the service's main port.
    pub addr: String,
    /// The container; dropping it removes the container.
    pub container: ContainerAsync<GenericImage>,
}

impl Service {
    /// A client connection to this service, a Redis, for a test's own commands.
    pub async fn redis_connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://{}", self.addr))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

const FIX: &str = "the integration suites need Docker and the images from `eval \"$(deploy/images.sh ensure)\"` \
                   (scripts/test.sh does both)";

/// `name:tag` from `image`, the tag after the last `:` that follows the last `/`.
fn split_image(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

async fn start(var: &str, default: &str, port: u16, ready: &str, cmd: Option<&[&str]>) -> Service {
    let image = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let (name, tag) = split_image(&image);
    let internal: ContainerPort = port.tcp();
    let mut request = GenericImage::new(name, tag)
        .with_exposed_port(internal)
        .with_wait_for(WaitFor::message_on_either_std(ready))
        .with_startup_timeout(Duration::from_secs(60));
    if let Some(cmd) = cmd {
        request = request.with_cmd(cmd.iter().copied());
    }
    let container = request
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start {image} ({var}): {e}\n{FIX}"));
    let host_port = container
        .get_host_port_ipv4(internal)
        .await
        .unwrap_or_else(|e| panic!("{image}: no mapped port {port}: {e}"));
    Service {
        addr: format!("127.0.0.1:{host_port}"),
        container,
    }
}

/// A Redis image: the variable `deploy/images.sh ensure` sets, and the image used without it.
#[derive(Debug, Clone, Copy)]
pub struct RedisImage {
    var: &'static str,
    default: &'static str,
}

/// The Redis the suites run on (7.2).
pub const REDIS: RedisImage = RedisImage {
    var: "JANUS_REDIS_IMAGE",
    default: "redis:7.2-alpine",
};

/// An older Redis (6.0: before `SET … GET`), which go-pantheon deployments may still run.
pub const REDIS_OLD: RedisImage = RedisImage {
    var: "JANUS_REDIS_OLD_IMAGE",
    default: "redis:6.0-alpine",
};

/// A fresh Redis (no persistence).
pub async fn redis() -> Service {
    redis_on(REDIS).await
}

/// A fresh Redis of `image` (no persistence).
pub async fn redis_on(image: RedisImage) -> Service {
    start(
        image.var,
        image.default,
        6379,
        "Ready to accept connections",
        None,
    )
    .await
}

/// A fresh single-node Redis Cluster of `image` on the host's network (cluster nodes announce
/// their own address, so no port mapping can stand between them and the client) at
/// `127.0.0.1:<port>`, with no slot assigned yet; `port` must be free.
pub async fn redis_cluster(image: RedisImage, port: u16) -> Service {
    let name_tag = std::env::var(image.var).unwrap_or_else(|_| image.default.to_owned());
    let (name, tag) = split_image(&name_tag);
    let port_arg = port.to_string();
    let container = GenericImage::new(name, tag)
        .with_wait_for(WaitFor::message_on_either_std(
            "Ready to accept connections",
        ))
        .with_network("host")
        .with_cmd([
            "redis-server",
            "--port",
            port_arg.as_str(),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .with_startup_timeout(Duration::from_secs(60))
        .start()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {name_tag} ({}) as a cluster node: {e}\n{FIX}",
                image.var
            )
        });
    Service {
        addr: format!("127.0.0.1:{port}"),
        container,
    }
}

/// A fresh single-node Redis Cluster of `image` ([`redis_cluster`], on a free port) that owns
/// every slot and answers `cluster_state:ok`.
pub async fn redis_cluster_ready(image: RedisImage) -> Service {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let node = redis_cluster(image, port).await;
    let mut conn = node.redis_connection().await;
    // ADDSLOTS: ADDSLOTSRANGE is Redis 7 only.
    let _: () = redis::cmd("CLUSTER")
        .arg("ADDSLOTS")
        .arg((0..16384).collect::<Vec<u16>>())
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut state = String::new();
    for _ in 0..50 {
        state = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut conn)
            .await
            .unwrap();
        if state.contains("cluster_state:ok") {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the cluster node never became ready: {state}");
}

/// A fresh NATS server.
pub async fn nats() -> Service {
    start(
        "JANUS_NATS_IMAGE",
        "nats:2.10-alpine",
        4222,
        "Server is ready",
        None,
    )
    .await
}

/// A fresh single-member etcd.
pub async fn etcd() -> Service {
    start(
        "JANUS_ETCD_IMAGE",
        "gcr.io/etcd-development/etcd:v3.5.17",
        2379,
        "ready to serve client requests",
        Some(&[
            "etcd",
            "--data-dir",
            "/tmp/etcd-data",
            "--listen-client-urls",
            "http://0.0.0.0:2379",
            "--advertise-client-urls",
            "http://0.0.0.0:2379",
        ]),
    )
    .await
}

/// The tag the suites run the project's own image under, unless `JANUS_TEST_IMAGE` names
/// another: never the compose stack's `janus:local`, so building it for a test run leaves a
/// running stack's containers alone. `scripts/test.sh` builds it with
/// `JANUS_IMAGE=janus:test deploy/images.sh project <binary>`.
pub const TEST_JANUS_IMAGE: &str = "janus:test";

/// The project's own image (`JANUS_TEST_IMAGE`, default [`TEST_JANUS_IMAGE`]; never pulled).
pub fn janus_image() -> GenericImage {
    let image = std::env::var("JANUS_TEST_IMAGE").unwrap_or_else(|_| TEST_JANUS_IMAGE.to_owned());
    let (name, tag) = split_image(&image);
    GenericImage::new(name, tag)
}

/// An infrastructure image (`var`, else `default`) for use on a private network.
pub fn infra_image(var: &str, default: &str) -> GenericImage {
    let image = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let (name, tag) = split_image(&image);
    GenericImage::new(name, tag)
}

/// How to fix a container that does not start.
pub const HOW_TO_FIX: &str = FIX;

#[cfg(test)]
mod tests {
    use super::{TEST_JANUS_IMAGE, split_image};

    fn repo_file(path: &str) -> String {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        std::fs::read_to_string(format!("{root}/{path}")).unwrap()
    }

    #[test]
    fn the_suites_image_is_not_the_one_a_compose_stack_runs() {
        let compose = repo_file("docker-compose.yml");
        let default = compose
            .split("${JANUS_IMAGE:-")
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .expect("docker-compose.yml names a default janus image");
        assert_eq!(default, "janus:local");
        assert_ne!(TEST_JANUS_IMAGE, default);
        // The test script builds the suites' tag, not the compose one.
        let script = repo_file("scripts/test.sh");
        let build = script
            .lines()
            .find(|line| line.contains("deploy/images.sh project"))
            .expect("scripts/test.sh builds the janus image");
        assert!(
            build.contains("JANUS_IMAGE=\"$JANUS_TEST_IMAGE\""),
            "scripts/test.sh must build $JANUS_TEST_IMAGE: {build}"
        );
        assert!(script.contains(&format!("JANUS_TEST_IMAGE:-{TEST_JANUS_IMAGE}")));
    }

    #[test]
    fn image_names_split_at_the_tag_not_the_registry_port() {
        assert_eq!(split_image("redis:7.2-alpine"), ("redis", "7.2-alpine"));
        assert_eq!(
            split_image("localhost:5000/redis"),
            ("localhost:5000/redis", "latest")
        );
        assert_eq!(
            split_image("gcr.io/etcd-development/etcd:v3.5.17"),
            ("gcr.io/etcd-development/etcd", "v3.5.17")
        );
    }
}
