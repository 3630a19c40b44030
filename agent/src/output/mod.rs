//! Where events and alerts leave the agent: event lines (`events`), alert
//! delivery with spools (`sinks`), the formats SIEMs read (`format`) and the
//! Prometheus metrics with their HTTP endpoint (`metrics`, `http`).

pub mod agent_id;
pub mod events;
pub mod events_file;
pub mod format;
mod gate_metrics;
pub mod http;
pub mod lines;
pub mod metrics;
pub mod record_json;
pub mod rotation;
pub mod sinks;
pub mod stamp;
pub mod summary;
