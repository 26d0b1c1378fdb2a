//! Running totals, shared between the tasks of one direction and printed on standard output:
//! periodically, and once more at exit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A fixed set of named counters.
#[derive(Debug)]
pub struct Counters {
    role: &'static str,
    names: &'static [&'static str],
    values: Vec<AtomicU64>,
}

impl Counters {
    /// Counters `names`, all 0, for the direction `role` (`export` or `import`).
    pub fn new(role: &'static str, names: &'static [&'static str]) -> Arc<Self> {
        Arc::new(Counters {
            role,
            names,
            values: names.iter().map(|_| AtomicU64::new(0)).collect(),
        })
    }

    fn slot(&self, name: &str) -> &AtomicU64 {
        let i = self
            .names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| unreachable!("counter {name} is not declared"));
        &self.values[i]
    }

    /// Adds `n` to counter `name`.
    pub fn add(&self, name: &str, n: u64) {
        if n > 0 {
            self.slot(name).fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Sets counter `name` (a level rather than a total, such as the last sequence number).
    pub fn set(&self, name: &str, n: u64) {
        self.slot(name).store(n, Ordering::Relaxed);
    }

    /// The value of counter `name`.
    pub fn get(&self, name: &str) -> u64 {
        self.slot(name).load(Ordering::Relaxed)
    }

    /// One JSON object: `{"role": …, name: value, …}`, in the declared order (names and role
    /// are identifiers, nothing to escape).
    pub fn json(&self) -> String {
        let fields: Vec<String> = self
            .names
            .iter()
            .zip(&self.values)
            .map(|(n, v)| format!("\"{n}\":{}", v.load(Ordering::Relaxed)))
            .collect();
        format!("{{\"role\":\"{}\",{}}}", self.role, fields.join(","))
    }

    /// One line of text: `role: name value, …`.
    pub fn text(&self) -> String {
        let fields: Vec<String> = self
            .names
            .iter()
            .zip(&self.values)
            .map(|(n, v)| format!("{} {}", n.replace('_', " "), v.load(Ordering::Relaxed)))
            .collect();
        format!("{}: {}", self.role, fields.join(", "))
    }

    /// Prints the counters on standard output, as JSON or text.
    pub fn print(&self, json: bool) {
        use std::io::Write;
        let line = if json { self.json() } else { self.text() };
        let mut out = std::io::stdout().lock();
        // A closed standard output must not stop the bridge: the counters are a report.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    /// Prints the counters every `every` until the task is dropped.
    pub fn spawn_reporter(self: &Arc<Self>, every: Duration, json: bool) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                me.print(json);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_print_as_json_and_text() {
        let c = Counters::new("import", &["received", "lost_transit"]);
        c.add("received", 3);
        c.set("lost_transit", 2);
        assert_eq!(
            c.json(),
            r#"{"role":"import","received":3,"lost_transit":2}"#
        );
        assert_eq!(c.text(), "import: received 3, lost transit 2");
    }
}
