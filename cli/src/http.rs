//! The smallest HTTP client there is: one GET, its status code. Container health checks
//! (`janus probe`) and the load generator's readiness waits use it, so no image needs curl.

use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GETs `url` (`http://host:port/path`) and returns the response's status code.
pub(crate) async fn status(url: &str) -> anyhow::Result<u16> {
    let rest = url.strip_prefix("http://").context("only http:// URLs")?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let mut stream = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .context("timed out connecting")??;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(3), stream.read_to_string(&mut response))
        .await
        .context("timed out reading")??;
    let status = response.split_whitespace().nth(1).unwrap_or("");
    status
        .parse()
        .with_context(|| format!("{url} answered {status:?}, not an HTTP status"))
}
