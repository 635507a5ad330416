//! TAP-like reporting: one `ok - NAME` or `not ok - NAME: WHY` line per case,
//! printed as it happens so that a guest that dies mid-suite still shows how
//! far it got.

use std::io::Write;

use libdxg::{Errno, Error};

/// Counts and prints results.
#[derive(Debug, Default)]
pub struct Tap {
    pub passed: usize,
    pub failed: usize,
}

impl Tap {
    pub fn new() -> Tap {
        Tap::default()
    }

    pub fn ok(&mut self, name: &str) {
        self.passed += 1;
        println!("ok - {name}");
        let _ = std::io::stdout().flush();
    }

    pub fn not_ok(&mut self, name: &str, why: &str) {
        self.failed += 1;
        println!("not ok - {name}: {why}");
        let _ = std::io::stdout().flush();
    }

    /// `ok` when `pass`, else `not ok` with `why`.
    pub fn check(&mut self, name: &str, pass: bool, why: impl FnOnce() -> String) -> bool {
        if pass {
            self.ok(name);
        } else {
            self.not_ok(name, &why());
        }
        pass
    }

    /// A garbage call: it must fail with an errno from the driver. Returns
    /// true when it (wrongly) succeeded, so the caller can clean up after it.
    pub fn refused<T: std::fmt::Debug>(&mut self, name: &str, r: Result<T, Error>) -> bool {
        match r {
            Err(e) => match e.errno() {
                Some(errno) => {
                    self.ok(&format!("{name} ({})", short(errno)));
                    false
                }
                None => {
                    self.not_ok(name, &format!("expected an errno, got: {e}"));
                    false
                }
            },
            Ok(v) => {
                self.not_ok(name, &format!("succeeded ({v:?}), expected an error"));
                true
            }
        }
    }

    /// As [`Tap::refused`], requiring errno `want`.
    pub fn refused_with<T: std::fmt::Debug>(
        &mut self,
        name: &str,
        r: Result<T, Error>,
        want: i32,
    ) -> bool {
        match r {
            Err(e) if e.errno() == Some(Errno(want)) => {
                self.ok(&format!("{name} ({})", short(Errno(want))));
                false
            }
            Err(e) => {
                self.not_ok(name, &format!("expected {}, got: {e}", short(Errno(want))));
                false
            }
            Ok(v) => {
                self.not_ok(name, &format!("succeeded ({v:?}), expected an error"));
                true
            }
        }
    }

    /// A call that must succeed; its value when it did.
    pub fn works<T>(&mut self, name: &str, r: Result<T, Error>) -> Option<T> {
        match r {
            Ok(v) => {
                self.ok(name);
                Some(v)
            }
            Err(e) => {
                self.not_ok(name, &e.to_string());
                None
            }
        }
    }

    /// Prints the summary line; true when every case passed.
    pub fn finish(&self) -> bool {
        println!("# {} passed, {} failed", self.passed, self.failed);
        self.failed == 0
    }
}

fn short(e: Errno) -> String {
    e.name()
        .map_or_else(|| format!("errno {}", e.0), str::to_string)
}
