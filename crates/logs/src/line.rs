//! TEMPORARY stand-in for the log store's `LogLine` (replaced at merge).
#![allow(missing_docs)]

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Phases {
    pub guard: f64,
    pub limit: f64,
    pub l1: f64,
    pub l2: f64,
    pub coalesce_wait: f64,
    pub connect: f64,
    pub ttfb: f64,
    pub upstream_body: f64,
    pub encode: f64,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    pub id: u64,
    pub level: Level,
    pub kind: String,
    pub message: String,
    pub target: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub route: Option<String>,
    pub route_name: Option<String>,
    pub status: Option<u16>,
    pub latency_ms: Option<f64>,
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    pub cache: Option<String>,
    pub layer: Option<String>,
    pub detail: Option<String>,
    pub upstream: Option<String>,
    pub attempts: Option<u32>,
    pub user: Option<String>,
    pub ip: Option<String>,
    pub error: Option<String>,
    pub trace_id: Option<String>,
    pub request_kind: Option<String>,
    pub phases: Option<Phases>,
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
}

impl LogLine {
    pub fn to_json(&self, out: &mut Vec<u8>) {
        let _ = serde_json::to_writer(out, self);
    }
}
