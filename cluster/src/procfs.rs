//! What the master reads of its workers in `/proc`: resident memory and CPU time.

/// What `/proc/<pid>` says of a process.
pub(crate) struct ProcStat {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

impl ProcStat {
    pub fn read(pid: u32) -> Option<ProcStat> {
        if pid == 0 {
            return None;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let (hz, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Some(ProcStat {
            rss_bytes: pages * page.max(1) as u64,
            cpu_seconds: ticks as f64 / hz.max(1) as f64,
        })
    }
}
