//! Identifier checksums: USCC, organisation code, ID number.
