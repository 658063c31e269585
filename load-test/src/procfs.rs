//! CPU time and peak memory of the server under test, read from `/proc`.

use std::io;

/// A point-in-time reading of a process.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProcSample {
    /// User plus system CPU time, in microseconds.
    pub cpu_micros: u64,
}

/// Reads `utime + stime` of `pid` from `/proc/<pid>/stat`.
#[cfg(target_os = "linux")]
pub(crate) fn sample(pid: u32) -> io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_cpu_ticks(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat format"),
        )
    })?;
    let micros = u128::from(ticks) * 1_000_000 / u128::from(clock_ticks_per_second());
    Ok(ProcSample {
        cpu_micros: micros as u64,
    })
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn sample(_pid: u32) -> io::Result<ProcSample> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "process statistics need Linux /proc",
    ))
}

/// Peak resident set size (`VmHWM`) of `pid`, in bytes.
#[cfg(target_os = "linux")]
pub(crate) fn peak_rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_kb(&status, "VmHWM:")
        .map(|kb| kb * 1024)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no VmHWM in /proc/{pid}/status"),
            )
        })
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn peak_rss_bytes(_pid: u32) -> io::Result<u64> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "process statistics need Linux /proc",
    ))
}

/// `utime + stime` (fields 14 and 15) in clock ticks. The command name
/// (field 2) may contain spaces and parentheses, so fields are counted from
/// the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state); utime is field 14, i.e. index 11.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it has no
    // preconditions and touches no memory we own.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat = "1234 (weft (server) x) S 1 1234 1234 0 -1 4194560 5000 0 0 0 250 75 0 0 20 0 9 0 100 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn parses_status_kb() {
        let status = "Name:\tweft\nVmPeak:\t  20000 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_status_kb(status, "VmHWM:"), Some(12345));
        assert_eq!(parse_status_kb(status, "VmSwap:"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(sample(pid).is_ok());
        assert!(peak_rss_bytes(pid).unwrap() > 0);
    }
}
