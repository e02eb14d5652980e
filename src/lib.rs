//! dualpub: publishes an agency's administrative permits and penalties (双公示) from its enforcement system to the
//! provincial credit platform. See ARCHITECTURE.md for the map of modules.

pub mod calendar;
pub mod ids;
pub mod model;
pub mod sim;
pub mod source_schema;
pub mod xml;
