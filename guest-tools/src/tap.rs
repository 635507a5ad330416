//! TAP-like reporting: one `ok - NAME` or `not ok - NAME: WHY` line per case,
//! printed as it happens so that a guest that dies mid-suite still shows how
//! far it got.

use std::io::Write;

use libdxg::{Errno, Error};

/// Counts and prints results, and keeps them for a JUnit report.
#[derive(Debug, Default)]
pub struct Tap {
    pub passed: usize,
    pub failed: usize,
    /// Every case: its name and, when it failed, why.
    pub cases: Vec<(String, Option<String>)>,
}

impl Tap {
    pub fn new() -> Tap {
        Tap::default()
    }

    pub fn ok(&mut self, name: &str) {
        self.passed += 1;
        self.cases.push((name.to_string(), None));
        println!("ok - {name}");
        let _ = std::io::stdout().flush();
    }

    pub fn not_ok(&mut self, name: &str, why: &str) {
        self.failed += 1;
        self.cases.push((name.to_string(), Some(why.to_string())));
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

/// Escapes text for XML attributes and content.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

impl Tap {
    /// The results as a JUnit XML document, one `testcase` per line that
    /// was printed, in suite `suite`.
    pub fn junit(&self, suite: &str) -> String {
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        x += &format!(
            "<testsuites tests=\"{}\" failures=\"{}\">\n  <testsuite name=\"dxgtest.{}\" tests=\"{}\" failures=\"{}\">\n",
            self.cases.len(),
            self.failed,
            xml(suite),
            self.cases.len(),
            self.failed
        );
        for (name, failure) in &self.cases {
            x += &format!(
                "    <testcase classname=\"dxgtest.{}\" name=\"{}\"",
                xml(suite),
                xml(name)
            );
            match failure {
                None => x += "/>\n",
                Some(why) => {
                    x += &format!(
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                        xml(why),
                        xml(why)
                    )
                }
            }
        }
        x += "  </testsuite>\n</testsuites>\n";
        x
    }
}

fn short(e: Errno) -> String {
    e.name()
        .map_or_else(|| format!("errno {}", e.0), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_lists_every_case_and_escapes_text() {
        let mut t = Tap::new();
        t.ok("vector add <4096>");
        t.not_ok("bad & worse", "expected \"EINVAL\", got 'ok'\u{1}");
        let x = t.junit("compute");
        assert!(
            x.contains("<testsuite name=\"dxgtest.compute\" tests=\"2\" failures=\"1\">"),
            "{x}"
        );
        assert!(x.contains("name=\"vector add &lt;4096&gt;\"/>"), "{x}");
        assert!(
            x.contains("<failure message=\"expected &quot;EINVAL&quot;, got &apos;ok&apos; \">"),
            "{x}"
        );
        assert!(x.ends_with("</testsuites>\n"));
        assert!(!t.finish());
    }
}
