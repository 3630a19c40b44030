//! Alert encodings SIEMs read: ECS JSON (`ecs`), OCSF JSON (`ocsf`) and
//! ArcSight CEF (`cef`).

pub mod cef;
pub mod ecs;
pub mod ocsf;

use crate::{alerts::Alert, config::Schema};

/// The JSON document an alert becomes under `schema`.
pub fn document(a: &Alert, schema: Schema) -> serde_json::Value {
    match schema {
        Schema::Ecs => ecs::to_ecs(a),
        Schema::Ocsf => ocsf::from_alert(a),
    }
}
