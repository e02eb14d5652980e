//! The platform XML documents.
