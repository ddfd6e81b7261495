//! Full-stack integration suites: filled in by the stack issue.
