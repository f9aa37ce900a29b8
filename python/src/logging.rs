//! Rust `tracing` events reach Python's `logging`, under the logger `dmdelegate` (with the
//! Rust target appended, e.g. `dmdelegate.dmdelegate::engine`).

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

struct PythonLogging;

#[derive(Default)]
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            self.0.push_str(&format!("{value:?}"));
        } else {
            self.0.push_str(&format!("{}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            self.0.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

fn python_level(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        _ => 10,
    }
}

impl<S: Subscriber> Layer<S> for PythonLogging {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if crate::interpreter::stopped() {
            return;
        }
        let meta = event.metadata();
        let level = python_level(meta.level());
        let mut text = Text::default();
        event.record(&mut text);
        let target = format!("dmdelegate.{}", meta.target());
        // Never block a runtime thread on a Python error: logging is best effort, and
        // nothing is logged once the interpreter is shutting down.
        crate::interpreter::attach(|py| {
            let Ok(logging) = py.import("logging") else {
                return;
            };
            let Ok(logger) = logging.call_method1("getLogger", (target,)) else {
                return;
            };
            let enabled = logger
                .call_method1("isEnabledFor", (level,))
                .and_then(|v| v.extract::<bool>())
                .unwrap_or(false);
            if enabled {
                let _ = logger.call_method1("log", (level, text.0));
            }
        });
    }
}

/// Installs the bridge as the process's tracing subscriber (once; a host that installed
/// its own keeps it).
pub fn install() {
    let subscriber = tracing_subscriber::registry().with(PythonLogging);
    let _ = tracing::subscriber::set_global_default(subscriber);
}
