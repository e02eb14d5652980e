//! The report side of `dualpub reconcile` and `dualpub report annual`.
//!
//! `report` is the data model of a gap report (DESIGN §4): gap rows by category, the platform's grading rates
//! (及时率, 入库率, 完整率) and decisions per month. The comparison engine fills it; it never does I/O.
//! `writers` turns a `Report` into what operators read: a terminal table, a stable JSON object, CSV files for
//! Excel and an xlsx workbook. `annual` counts a year's decisions for the 政府信息公开工作年度报告 and writes
//! them the same ways.
//!
//! Invariant: party ID numbers enter this module already masked (`ids::mask_id`) and nothing here ever prints
//! any other identifier in their column.

pub mod annual;
pub mod engine;
pub mod gaps;
pub mod report;
pub mod repush;
pub mod stale;
pub mod writers;
