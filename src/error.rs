//! The crate's error: a message that says what failed and how to fix it,
//! built on the lower layers' errors without dropping their cause.

use std::fmt;

#[derive(Debug)]
pub struct Error {
    pub msg: String,
}

impl Error {
    pub fn new(msg: impl Into<String>) -> Error {
        Error { msg: msg.into() }
    }

    /// Adds what was being done in front of the cause.
    pub fn context(self, what: impl fmt::Display) -> Error {
        Error {
            msg: format!("{what}: {}", self.msg),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl From<crate::sys::SysError> for Error {
    fn from(e: crate::sys::SysError) -> Error {
        let hint = match e.errno() {
            libc::EPERM | libc::EACCES => {
                " (run as root, or with CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE)"
            }
            _ => "",
        };
        Error::new(format!("{e}{hint}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::new(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
