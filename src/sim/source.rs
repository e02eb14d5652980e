//! The enforcement-system simulator (in progress).
