//! Janus edge: filled in by the edge issue.
