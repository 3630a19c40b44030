//! Alert encodings SIEMs read: ECS JSON (`ecs`) and ArcSight CEF (`cef`).

pub mod cef;
pub mod ecs;
