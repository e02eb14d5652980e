//! Working-day calendar (调休) and publication deadlines.
