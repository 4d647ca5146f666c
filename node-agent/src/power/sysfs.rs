//! Reading host files (sysfs attributes, procfs tables), with errors that name the file and the
//! fix, and directories listed in natural order.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// Why a host file could not be read, or what it held instead of a number.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{} is missing", .path.display())]
    Missing { path: PathBuf },
    #[error(
        "{} is readable only by root since CVE-2020-8694: run the agent as root or with \
         CAP_DAC_READ_SEARCH, or use the perf power PMU (--power-source perf, needs CAP_PERFMON \
         only)",
        .path.display()
    )]
    RootOnlyEnergy { path: PathBuf },
    #[error(
        "{} is not readable by this user: run the agent as root or with CAP_DAC_READ_SEARCH",
        .path.display()
    )]
    NotReadable { path: PathBuf },
    #[error("reading {}: {error}", .path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error(
        "{}: {text:?} is not a non-negative integer (a broken driver or a wrong --path.sysfs?)",
        .path.display()
    )]
    NotAnInteger { path: PathBuf, text: String },
    #[error(
        "{}: {text:?} is not an integer (a broken driver or a wrong --path.sysfs?)",
        .path.display()
    )]
    NotASignedInteger { path: PathBuf, text: String },
}

impl ReadError {
    /// What failed reading `path`, in the words that say what to do.
    pub fn new(path: &Path, error: io::Error) -> Self {
        let path = path.to_owned();
        match error.kind() {
            io::ErrorKind::NotFound => Self::Missing { path },
            io::ErrorKind::PermissionDenied
                if path.file_name().is_some_and(|n| n == "energy_uj") =>
            {
                Self::RootOnlyEnergy { path }
            }
            io::ErrorKind::PermissionDenied => Self::NotReadable { path },
            _ => Self::Io { path, error },
        }
    }
}

/// Reads a whole host file (a procfs table, say).
pub(crate) fn read_text(path: &Path) -> Result<String, ReadError> {
    fs::read_to_string(path).map_err(|e| ReadError::new(path, e))
}

/// Reads a sysfs attribute as a trimmed string.
pub(crate) fn read_attr(path: &Path) -> Result<String, ReadError> {
    read_text(path).map(|s| s.trim().to_owned())
}

/// A sysfs attribute's text as an unsigned integer (surrounding whitespace is not part of it).
pub(crate) fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A sysfs attribute's text as a signed integer.
pub(crate) fn parse_i64(text: &str) -> Option<i64> {
    text.trim().parse().ok()
}

/// Reads a sysfs attribute holding an unsigned integer.
pub(crate) fn read_u64(path: &Path) -> Result<u64, ReadError> {
    let text = read_attr(path)?;
    parse_u64(&text).ok_or_else(|| ReadError::NotAnInteger {
        path: path.to_owned(),
        text,
    })
}

/// Reads a sysfs attribute holding a signed integer (hwmon voltages and currents).
pub(crate) fn read_i64(path: &Path) -> Result<i64, ReadError> {
    let text = read_attr(path)?;
    parse_i64(&text).ok_or_else(|| ReadError::NotASignedInteger {
        path: path.to_owned(),
        text,
    })
}

/// Names under `dir`, sorted naturally (`hwmon2` before `hwmon10`).
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<String>, io::Error> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort_by_key(|a| natural_key(a));
    Ok(names)
}

/// `intel-rapl:10` sorts after `intel-rapl:2`.
fn natural_key(s: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut num: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(
                num.unwrap_or(0)
                    .saturating_mul(10)
                    .saturating_add(u64::from(d)),
            );
        } else {
            if let Some(n) = num.take() {
                out.push((std::mem::take(&mut text), n));
            }
            text.push(c);
        }
    }
    out.push((text, num.unwrap_or(0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec![
            "intel-rapl:10",
            "intel-rapl:2",
            "intel-rapl:1:0",
            "intel-rapl:1",
        ];
        v.sort_by_key(|a| natural_key(a));
        assert_eq!(
            v,
            [
                "intel-rapl:1",
                "intel-rapl:1:0",
                "intel-rapl:2",
                "intel-rapl:10"
            ]
        );
    }

    #[test]
    fn unreadable_energy_names_the_cve_and_the_alternatives() {
        let e = ReadError::new(
            Path::new("/sys/class/powercap/intel-rapl:0/energy_uj"),
            io::Error::from(io::ErrorKind::PermissionDenied),
        )
        .to_string();
        assert!(e.contains("CVE-2020-8694"), "{e}");
        assert!(e.contains("CAP_DAC_READ_SEARCH") && e.contains("--power-source perf"));
        let e = ReadError::new(
            Path::new("/sys/class/hwmon/hwmon0/name"),
            io::Error::from(io::ErrorKind::PermissionDenied),
        )
        .to_string();
        assert!(
            e.contains("not readable by this user") && !e.contains("CVE"),
            "{e}"
        );
    }
}
