//! `shipper._lines`: the shipper's per-line core, from a file's bytes to wire records.
//!
//! Python keeps the file lifecycle, batching, delivery and checkpoints (shipper/agent.py);
//! everything done once per line runs here, where it costs a fraction of a microsecond.

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

mod cri;
mod docker;
mod json;
mod multiline;
mod otel;
mod parse;
mod partial;
mod records;
mod redact;
mod timestamp;

fn dict_int(d: &Bound<'_, PyDict>, key: &str) -> PyResult<i32> {
    d.get_item(key)?
        .ok_or_else(|| PyValueError::new_err(format!("missing {key}")))?
        .extract()
}

/// What every file's records go through; one per agent.
#[pyclass(frozen, module = "shipper._lines")]
struct Processing {
    inner: Arc<records::Processing>,
}

#[pymethods]
impl Processing {
    /// `flags`: schemas.record's FLAG_* bits by kind; `severities`: schemas.record.SEVERITY_NUMBERS;
    /// `claimed_time_attribute`: schemas.record.CLAIMED_TIME_ATTRIBUTE.
    #[new]
    #[pyo3(signature = (*, max_record_bytes, redact, redact_patterns, multiline, multiline_patterns,
                        multiline_flush_ms, labels, event_time_max_past_s, event_time_max_future_s,
                        claimed_time_attribute, flags, severities))]
    #[allow(clippy::too_many_arguments)]
    fn new(max_record_bytes: usize, redact: Vec<String>, redact_patterns: Vec<String>, multiline: Vec<String>,
           multiline_patterns: Vec<String>, multiline_flush_ms: u64, labels: Vec<(String, String)>,
           event_time_max_past_s: u64, event_time_max_future_s: u64, claimed_time_attribute: String,
           flags: &Bound<'_, PyDict>, severities: &Bound<'_, PyDict>) -> PyResult<Self> {
        let mut levels = [0; 6];
        for (i, name) in ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"].into_iter().enumerate() {
            levels[i] = dict_int(severities, name)?;
        }
        let flags = records::Flags {
            truncated: dict_int(flags, "truncated")?,
            invalid_utf8: dict_int(flags, "invalid_utf8")?,
            partial: dict_int(flags, "partial")?,
            bad_prefix: dict_int(flags, "bad_prefix")?,
            non_object_json: dict_int(flags, "non_object_json")?,
            redacted: dict_int(flags, "redacted")?,
            time_claimed: dict_int(flags, "time_claimed")?,
        };
        Ok(Processing {
            inner: Arc::new(records::Processing {
                max_record_bytes,
                redactor: redact::Redactor::new(&redact, &redact_patterns).map_err(PyValueError::new_err)?,
                multiline: multiline::compile_rules(&multiline, &multiline_patterns).map_err(PyValueError::new_err)?,
                multiline_flush_ms,
                labels,
                flags,
                parser: parse::Parser::new(levels),
                event_time: timestamp::Window::from_secs(event_time_max_past_s, event_time_max_future_s),
                claimed_time_attribute,
            }),
        })
    }
}

/// (records, ends): the records back to back, each followed by a newline, and the offset just past
/// each one as native-endian 32-bit integers (Python: memoryview(ends).cast("I")).
fn to_python<'py>(py: Python<'py>, out: &records::Out) -> (Bound<'py, PyBytes>, Bound<'py, PyBytes>) {
    let ends: Vec<u8> = out.ends.iter().flat_map(|e| e.to_ne_bytes()).collect();
    (PyBytes::new(py, &out.buf), PyBytes::new(py, &ends))
}

type Records<'py> = (Bound<'py, PyBytes>, Bound<'py, PyBytes>);

/// The records of one source; keeps partial-line and multi-line state between reads.
#[pyclass(module = "shipper._lines")]
struct RecordBuilder {
    inner: records::Builder,
}

#[pymethods]
impl RecordBuilder {
    /// `resource`: the file's resource attributes as a JSON object (schemas.record's `resource`), or None.
    #[new]
    #[pyo3(signature = (proc, fmt, resource=None))]
    fn new(proc: &Processing, fmt: &str, resource: Option<&str>) -> PyResult<Self> {
        let fmt = match fmt {
            "cri" => records::Format::Cri,
            "docker" => records::Format::Docker,
            "plain" => records::Format::Plain,
            _ => return Err(PyValueError::new_err(format!("unknown format {fmt}"))),
        };
        let resource = match resource {
            None => Vec::new(),
            Some(json) => records::object_members(json)
                .ok_or_else(|| PyValueError::new_err("resource must be a JSON object"))?,
        };
        Ok(RecordBuilder { inner: records::Builder::new(proc.inner.clone(), fmt, resource) })
    }

    #[getter]
    fn fmt(&self) -> &'static str {
        self.inner.fmt.name()
    }

    /// Lowest offset a read may resume from (see records::Builder::commit_floor).
    fn commit_floor(&mut self) -> Option<i64> {
        self.inner.commit_floor()
    }

    /// (records, ends, lines) from `data`: complete lines read from offset `start`, each ending with a
    /// newline except the head of an overlong line when `cut`. `observed` (ns) is the time of plain-text
    /// lines; `now` the monotonic clock (s) for multi-line flushing.
    fn build<'py>(&mut self, py: Python<'py>, data: &[u8], start: i64, cut: bool, observed: i64, now: f64)
                  -> (Bound<'py, PyBytes>, Bound<'py, PyBytes>, usize) {
        let mut out = records::Out::default();
        let inner = &mut self.inner;
        let lines = py.allow_threads(|| inner.build(data, start, cut, observed, now, &mut out));
        let (records, ends) = to_python(py, &out);
        (records, ends, lines)
    }

    /// Multi-line events with no new line for the flush timeout.
    fn expired<'py>(&mut self, py: Python<'py>, now: f64) -> Records<'py> {
        let mut out = records::Out::default();
        self.inner.expired(now, &mut out);
        to_python(py, &out)
    }

    /// The file is finished: records whose end never came, flagged partial.
    fn drain<'py>(&mut self, py: Python<'py>, now: f64) -> Records<'py> {
        let mut out = records::Out::default();
        self.inner.drain(now, &mut out);
        to_python(py, &out)
    }

    /// Counts since the last call: (input problems by kind, redactions by rule), non-zero ones only.
    fn take_counts(&mut self) -> (Vec<(&'static str, u64)>, Vec<(String, u64)>) {
        let b = &mut self.inner;
        let kinds = records::KINDS.iter().zip(b.counts.iter()).filter(|(_, &n)| n > 0).map(|(k, &n)| (*k, n)).collect();
        let names = b.redactor_names();
        let rules = names.iter().zip(b.redactions.iter()).filter(|(_, &n)| n > 0).map(|(k, &n)| (k.clone(), n)).collect();
        b.counts = [0; records::KINDS.len()];
        b.redactions.iter_mut().for_each(|n| *n = 0);
        (kinds, rules)
    }
}

/// "cri", "docker" or "plain", from a file's first line.
#[pyfunction]
fn detect_format(first_line: &[u8]) -> &'static str {
    records::detect_format(first_line).name()
}

#[pymodule]
fn _lines(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Processing>()?;
    m.add_class::<RecordBuilder>()?;
    m.add_function(wrap_pyfunction!(detect_format, m)?)?;
    Ok(())
}
