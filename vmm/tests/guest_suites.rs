//! The guest test suites, each case its own test (being written).
fn main() {}
