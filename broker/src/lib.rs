//! Janus broker: filled in by the broker issue.
