//! Exit codes (DESIGN §1), decided in one place.

use std::fmt;

/// How a command ended. The numbers are a contract with operators' cron jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done, nothing needs attention.
    Ok = 0,
    /// Done, but something needs a person: records quarantined or rejected, or reconcile found gaps.
    Attention = 1,
    /// Usage or configuration error.
    Usage = 2,
    /// Aborted: source or platform unavailable after retries, or the store is damaged. Progress is kept.
    Aborted = 3,
    /// Another run holds the store.
    Locked = 4,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// An error on its way to `main`, with the exit code it means.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn new(exit: Exit, error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            exit,
            error: error.into(),
        }
    }
    pub fn usage(msg: impl fmt::Display) -> Failure {
        Failure {
            exit: Exit::Usage,
            error: anyhow::anyhow!("{msg}"),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl From<crate::config::ConfigError> for Failure {
    fn from(e: crate::config::ConfigError) -> Failure {
        Failure::new(Exit::Usage, e)
    }
}

impl From<crate::mapping::MappingError> for Failure {
    fn from(e: crate::mapping::MappingError) -> Failure {
        Failure::new(Exit::Usage, e)
    }
}
