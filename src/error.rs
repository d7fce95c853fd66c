//! The crate's error: what failed and how to fix it, built on the lower
//! layers' errors without dropping their cause.
//!
//! A lower layer's error is kept as a typed value ([`SysError`] with its
//! errno, [`io::Error`]) and returned by [`std::error::Error::source`];
//! [`Error::context`] wraps an error in what was being done. `Display`
//! prints the whole chain, outermost first ("loading X: opening Y: EPERM"),
//! so an error formatted anywhere says everything, and the binary prints
//! it as `pidmap: error: <chain>`.

use crate::sys::SysError;
use std::fmt;
use std::io;

#[derive(Debug)]
pub enum Error {
    /// Refused or invalid: the message says what and how to fix it.
    Msg(String),
    /// A failed system call (which call, on which object, the errno).
    Sys(SysError),
    /// A failed I/O operation of the standard library.
    Io(io::Error),
    /// What was being done when `source` failed.
    Context { what: String, source: Box<Error> },
}

impl Error {
    pub fn new(msg: impl Into<String>) -> Error {
        Error::Msg(msg.into())
    }

    /// Adds what was being done in front of the cause.
    pub fn context(self, what: impl fmt::Display) -> Error {
        Error::Context {
            what: what.to_string(),
            source: Box::new(self),
        }
    }

    /// The errno at the root of the chain, if a system call failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Msg(_) => None,
            Error::Sys(e) => Some(e.errno()),
            Error::Io(e) => e.raw_os_error(),
            Error::Context { source, .. } => source.errno(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Msg(m) => f.write_str(m),
            Error::Sys(e) => {
                write!(f, "{e}")?;
                if matches!(e.errno(), libc::EPERM | libc::EACCES) {
                    // only when privileges can be the cause: as root, a
                    // refusal has another reason and the hint would mislead
                    let missing = crate::sys::caps::missing();
                    if !missing.is_empty() {
                        write!(
                            f,
                            " (run as root, or with CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE; \
                             this process lacks {})",
                            missing.join(", ")
                        )?;
                    }
                }
                Ok(())
            }
            Error::Io(e) => write!(f, "{e}"),
            Error::Context { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Msg(_) => None,
            Error::Sys(e) => Some(e),
            Error::Io(e) => Some(e),
            Error::Context { source, .. } => Some(source.as_ref()),
        }
    }
}

impl From<SysError> for Error {
    fn from(e: SysError) -> Error {
        Error::Sys(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn the_chain_keeps_the_cause_and_its_errno() {
        let e = Error::from(SysError::new("bpf(MAP_CREATE)", "trie", libc::EPERM))
            .context("loading the BPF object");
        let text = e.to_string();
        assert!(
            text.starts_with("loading the BPF object: bpf(MAP_CREATE) on trie: "),
            "{text}"
        );
        // the hint is there exactly when a capability is missing
        assert_eq!(
            text.contains("run as root"),
            !crate::sys::caps::missing().is_empty(),
            "{text}"
        );
        assert_eq!(e.errno(), Some(libc::EPERM));
        let sys = e.source().and_then(|s| s.source()).expect("the SysError");
        assert!(sys.downcast_ref::<SysError>().is_some());
        let io = Error::from(io::Error::from_raw_os_error(libc::ENOENT)).context("x");
        assert_eq!(io.errno(), Some(libc::ENOENT));
        assert_eq!(Error::new("refused").errno(), None);
        assert!(Error::new("refused").source().is_none());
    }
}
