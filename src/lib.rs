//! dualpub: publishes an agency's administrative permits and penalties (双公示) from its enforcement system to the
//! provincial credit platform. See ARCHITECTURE.md for the map of modules.

pub mod calendar;
pub mod cli;
pub mod config;
pub mod exit;
pub mod findings;
pub mod ids;
pub mod map_input;
pub mod mapping;
pub mod model;
pub mod platform_client;
pub mod reconcile;
pub mod redact;
pub mod retry;
pub mod sim;
pub mod source_client;
pub mod source_schema;
pub mod store;
pub mod sync;
pub mod validate;
pub mod xml;
