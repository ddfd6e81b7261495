//! Loading the binaries' typed configuration: a TOML file (or none: every field has a default)
//! into a serde struct that denies unknown fields, then [`Validate::validate`], which collects
//! every problem at once, each naming its field by dotted path. Durations and listen addresses
//! are parsed while reading (`serde_with`'s `DurationSeconds`, [`IpPort`]), so components take
//! typed values. Owns no role's fields: the edge and the broker define their own structs.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_with::DeserializeAs;

use crate::error::{Error, Result};

/// A configuration that can check itself after parsing.
pub trait Validate {
    /// Records every problem in `problems`; an empty list means the configuration is usable.
    fn validate(&self, problems: &mut Problems);
}

/// The problems found while validating, each prefixed with its field's dotted path.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    /// Records `message` against `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: impl Display) {
        if !ok {
            self.push(field, message);
        }
    }

    /// Records `message` against `field`.
    pub fn push(&mut self, field: &str, message: impl Display) {
        self.0.push(format!("{field}: {message}"));
    }

    /// Validates a nested section, prefixing its problems with `prefix.`.
    pub fn section(&mut self, prefix: &str, section: &impl Validate) {
        let mut inner = Problems::default();
        section.validate(&mut inner);
        self.0.extend(
            inner
                .0
                .into_iter()
                .map(|problem| format!("{prefix}.{problem}")),
        );
    }

    /// Checks that `value` is `host:port` (a name others can resolve, or an address).
    pub fn check_host_port(&mut self, field: &str, value: &str) {
        self.check(
            value
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()),
            field,
            format!("{value:?} is not host:port"),
        );
    }

    /// Checks that `value` parses as a socket address (`host:port`).
    pub fn check_addr(&mut self, field: &str, value: &str) {
        if value.parse::<std::net::SocketAddr>().is_err() {
            self.push(
                field,
                format!("{value:?} is not a socket address (ip:port)"),
            );
        }
    }

    /// Checks that a duration read from an unsigned integer is not zero (the message is
    /// [`Problems::check_positive`]'s).
    pub fn check_nonzero(&mut self, field: &str, value: Duration) {
        self.check(!value.is_zero(), field, "must be greater than 0, got 0");
    }

    /// Checks that `value` is positive.
    pub fn check_positive<T: PartialOrd + Default + Display>(&mut self, field: &str, value: T) {
        if value <= T::default() {
            self.push(field, format!("must be greater than 0, got {value}"));
        }
    }
}

/// Parses `text` (from `origin`, used in messages) and validates the result.
pub fn parse<T: DeserializeOwned + Validate>(text: &str, origin: &str) -> Result<T> {
    parse_with_overrides(text, origin, "", std::iter::empty())
}

fn config_error(origin: &str, message: impl Into<String>) -> Error {
    Error::Config {
        origin: origin.to_owned(),
        problems: vec![message.into().trim_end().replace('\n', "\n  ")],
    }
}

/// Parses `text`, applies every `(name, value)` override whose name starts with `prefix__`
/// (`PREFIX__SECTION__FIELD=value` sets `section.field`; the value is read as a TOML value,
/// and as a string when it is not one), then deserializes and validates.
pub fn parse_with_overrides<T: DeserializeOwned + Validate>(
    text: &str,
    origin: &str,
    prefix: &str,
    overrides: impl Iterator<Item = (String, String)>,
) -> Result<T> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| config_error(origin, e.to_string()))?;
    let marker = format!("{prefix}__");
    let mut origin = origin.to_owned();
    for (name, raw) in overrides {
        let Some(path) = name.strip_prefix(&marker).filter(|_| !prefix.is_empty()) else {
            continue;
        };
        let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(raw));
        set(&mut table, &keys, value)
            .map_err(|why| config_error(&origin, format!("{name}: {why}")))?;
        origin = format!("{origin} + {name}");
    }
    let config: T = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let field = e.path().to_string();
        config_error(&origin, format!("{field}: {}", e.into_inner()))
    })?;
    let mut problems = Problems::default();
    config.validate(&mut problems);
    if problems.0.is_empty() {
        Ok(config)
    } else {
        Err(Error::Config {
            origin,
            problems: problems.0,
        })
    }
}

fn set(
    table: &mut toml::Table,
    keys: &[String],
    value: toml::Value,
) -> std::result::Result<(), String> {
    match keys {
        [] => Err("names no field".into()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => match table
            .entry(first.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(inner) => set(inner, rest, value),
            _ => Err(format!("{first} is not a section")),
        },
    }
}

/// Loads the file at `path` (or the defaults when there is none) with the environment's
/// `PREFIX__…` overrides applied.
pub fn load<T: DeserializeOwned + Validate>(path: Option<&Path>, env_prefix: &str) -> Result<T> {
    let (text, origin) = match path {
        None => (String::new(), "defaults".to_owned()),
        Some(path) => {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| config_error(&origin, format!("cannot read the file: {e}")))?;
            (text, origin)
        }
    };
    parse_with_overrides(&text, &origin, env_prefix, std::env::vars())
}

/// A listen address as a file writes it, `ip:port`, parsed once (`#[serde_as(as = "IpPort")]`
/// on a `SocketAddr`); one that does not parse is refused, quoting it, under its field's path
/// (a parse error, reported before validation).
pub struct IpPort;

impl<'de> DeserializeAs<'de, SocketAddr> for IpPort {
    fn deserialize_as<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<SocketAddr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(|_| {
            serde::de::Error::custom(format!("{text:?} is not a socket address (ip:port)"))
        })
    }
}

/// The KCP parameters a listener and a client share are a section of the edge's file.
impl Validate for janus_transport::kcp::KcpSettings {
    fn validate(&self, problems: &mut Problems) {
        let field = |name: &str| name.to_owned();
        problems.check(
            (10..=5000).contains(&self.interval),
            &field("interval"),
            format!("must be 10..=5000 ms, got {}", self.interval),
        );
        problems.check(
            (64..=1500).contains(&self.mtu),
            &field("mtu"),
            format!("must be 64..=1500, got {}", self.mtu),
        );
        problems.check_positive(&field("send_window"), self.send_window);
        problems.check_positive(&field("recv_window"), self.recv_window);
        let (data, parity) = (self.fec_data_shards, self.fec_parity_shards);
        problems.check(
            (data == 0) == (parity == 0),
            &field("fec_parity_shards"),
            format!(
                "fec_data_shards and fec_parity_shards are both 0 (FEC off) or both positive, got {data} and {parity}"
            ),
        );
        problems.check(
            data + parity <= 256,
            &field("fec_data_shards"),
            format!(
                "data and parity shards are at most 256 together, got {}",
                data + parity
            ),
        );
        if self.smux {
            problems.check(
                matches!(self.smux_version, 1 | 2),
                &field("smux_version"),
                format!("must be 1 or 2, got {}", self.smux_version),
            );
            problems.check(
                (1..=65535).contains(&self.smux_max_frame),
                &field("smux_max_frame"),
                format!("must be 1..=65535, got {}", self.smux_max_frame),
            );
            problems.check_nonzero(&field("smux_keepalive_secs"), self.smux_keepalive_secs);
            problems.check(
                self.smux_keepalive_timeout_secs > self.smux_keepalive_secs,
                &field("smux_keepalive_timeout_secs"),
                format!(
                    "must be greater than smux_keepalive_secs ({}), got {}",
                    self.smux_keepalive_secs.as_secs(),
                    self.smux_keepalive_timeout_secs.as_secs()
                ),
            );
            problems.check(
                self.smux_max_stream_buffer as usize >= self.smux_max_frame,
                &field("smux_max_stream_buffer"),
                format!(
                    "must be at least smux_max_frame ({}), got {}",
                    self.smux_max_frame, self.smux_max_stream_buffer
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        listen: String,
        limits: Limits,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Limits {
        rate: u32,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self {
                listen: "0.0.0.0:1".into(),
                limits: Limits::default(),
            }
        }
    }

    impl Default for Limits {
        fn default() -> Self {
            Self { rate: 10 }
        }
    }

    impl Validate for Sample {
        fn validate(&self, problems: &mut Problems) {
            problems.check_addr("listen", &self.listen);
            problems.check_positive("limits.rate", self.limits.rate);
        }
    }

    fn problems(result: Result<Sample>) -> Vec<String> {
        match result {
            Err(Error::Config { problems, .. }) => problems,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn no_file_means_defaults() {
        let sample: Sample = load(None, "JANUS_TEST_UNUSED").unwrap();
        assert_eq!(sample.limits.rate, 10);
    }

    #[test]
    fn every_validation_problem_is_reported_with_its_field() {
        let found = problems(parse(
            "listen = \"nowhere\"\n[limits]\nrate = 0\n",
            "t.toml",
        ));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("listen: "), "{found:?}");
        assert!(found[1].starts_with("limits.rate: "), "{found:?}");
    }

    #[test]
    fn unknown_and_mistyped_fields_name_the_field() {
        let found = problems(parse("[limits]\nrat = 3\n", "t.toml"));
        assert!(found[0].contains("rat"), "{found:?}");
        let found = problems(parse("[limits]\nrate = \"x\"\n", "t.toml"));
        assert!(found[0].contains("limits.rate"), "{found:?}");
    }

    #[test]
    fn environment_overrides_set_nested_fields_and_are_named_in_errors() {
        let vars = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
                .into_iter()
        };
        let sample: Sample = parse_with_overrides(
            "[limits]\nrate = 3\n",
            "t.toml",
            "APP",
            vars(&[
                ("APP__LIMITS__RATE", "7"),
                ("APP__LISTEN", "127.0.0.1:9"),
                ("OTHER__LISTEN", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (sample.limits.rate, sample.listen.as_str()),
            (7, "127.0.0.1:9")
        );
        let err = parse_with_overrides::<Sample>(
            "",
            "t.toml",
            "APP",
            vars(&[("APP__LIMITS__RATE", "0")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("APP__LIMITS__RATE") && err.contains("limits.rate"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_is_a_config_error_naming_it() {
        let err = load::<Sample>(Some(Path::new("/nonexistent/janus.toml")), "X").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/janus.toml"), "{err}");
    }

    #[test]
    fn kcp_validation_names_the_fields() {
        use janus_transport::kcp::KcpSettings;
        let mut problems = Problems::default();
        problems.section("kcp.params", &KcpSettings::default());
        assert_eq!(format!("{problems:?}"), "Problems([])");
        let bad = KcpSettings {
            fec_data_shards: 10,
            fec_parity_shards: 0,
            smux_version: 3,
            smux_keepalive_timeout_secs: std::time::Duration::from_secs(5),
            mtu: 9000,
            ..KcpSettings::default()
        };
        let mut problems = Problems::default();
        problems.section("kcp.params", &bad);
        let text = format!("{problems:?}");
        for field in [
            "kcp.params.fec_parity_shards",
            "kcp.params.smux_version",
            "kcp.params.smux_keepalive_timeout_secs",
            "kcp.params.mtu",
        ] {
            assert!(text.contains(field), "{field} in {text}");
        }
    }
}
