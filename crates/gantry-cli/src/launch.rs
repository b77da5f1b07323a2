//! `gantry train --nproc N`: starts N processes of this binary as the ranks of one job on this
//! machine, the way torchrun's standalone mode does: each gets `RANK`, `LOCAL_RANK`,
//! `WORLD_SIZE`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR=127.0.0.1` and a free `MASTER_PORT`, and joins
//! the job through torch's c10d (`gantry::dist`). Multi-machine jobs use torchrun or a scheduler
//! instead, which set the same variables.
//!
//! Rank 0 keeps this terminal (its progress and messages; on a terminal it writes to a
//! pseudo-terminal this launcher relays, so that its progress bar stays one); the others' messages
//! come through prefixed with their rank. Every rank's output passes through the launcher, which
//! keeps each rank's last error line. The children run in their own process group, so Ctrl-C
//! reaches this launcher only, which passes one SIGINT to every rank (they stop at the same step
//! and rank 0 saves once); a second Ctrl-C kills them. When a rank fails, the others are given a
//! grace period to fail on their own (their next collective does) and are then killed; the
//! launcher's last line names the rank that failed first, its exit status or signal, and its last
//! error line, as torchrun's summary does. The ranks die with the launcher (`PR_SET_PDEATHSIG`),
//! even when it is killed with SIGKILL.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// After the first rank fails, how long the others may take to stop by themselves.
const GRACE: Duration = Duration::from_secs(30);

/// The environment variable that tells each rank how many processes `--nproc` started (for the
/// resume hint rank 0 prints).
pub const NPROC_VAR: &str = "GANTRY_NPROC";

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid (not yet reaped, so not reused).
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// What a rank said on stderr that explains its end.
#[derive(Default)]
struct Said {
    /// Its last `gantry: error: ` message.
    error: Option<String>,
    /// Its last other error it printed (a panic's message, a C++ `what():`), for a rank that
    /// died without gantry's error line.
    other: Option<String>,
    /// The line before was a panic's first line: its message follows.
    panicking: bool,
}

impl Said {
    fn last(&self) -> Option<&str> {
        self.error.as_deref().or(self.other.as_deref())
    }

    /// Records one line; true when it is gantry's error line, which the summary reports.
    fn line(&mut self, line: &str) -> bool {
        let line = line.trim();
        if let Some(msg) = line.strip_prefix("gantry: error: ") {
            self.error = Some(msg.to_string());
            return true;
        }
        if line.is_empty() {
            return false;
        }
        if std::mem::take(&mut self.panicking) {
            self.other = Some(format!("panicked: {line}"));
        } else if line.contains("panicked at") {
            self.panicking = true;
        } else if !line.starts_with("gantry: ") {
            let lower = line.to_lowercase();
            if ["error", "what():", "terminate called", "fatal", "exception"]
                .iter()
                .any(|w| lower.contains(w))
            {
                self.other = Some(line.to_string());
            }
        }
        false
    }
}

/// The text of a line a terminal shows: what follows its last carriage return, without escape
/// sequences (a progress bar redraws itself with both).
fn shown(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\r', '\n']);
    let last = text.rsplit('\r').next().unwrap_or("");
    let mut out = String::new();
    let mut chars = last.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte; other escapes: ESC and one character.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Relays a rank's stderr to ours, line by line (`prefix` before each line), keeping what it
/// said; its error lines are held back for the summary.
fn relay_lines(from: impl Read, prefix: String, said: Arc<Mutex<Said>>) {
    let mut reader = BufReader::new(from);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = shown(&buf);
                if !lock(&said).line(&line) {
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(prefix.as_bytes());
                    let _ = err.write_all(&buf);
                    if !buf.ends_with(b"\n") {
                        let _ = err.write_all(b"\n");
                    }
                }
            }
        }
    }
}

/// Relays a pseudo-terminal's output to our stderr byte for byte (escape sequences, carriage
/// returns and all), keeping what the rank said.
fn relay_terminal(from: std::fs::File, said: Arc<Mutex<Said>>) {
    let mut from = from;
    let mut chunk = [0u8; 4096];
    let mut line = Vec::new();
    loop {
        // EIO once the rank (the last holder of the other side) is gone.
        let n = match from.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&chunk[..n]);
        let _ = err.flush();
        for &b in &chunk[..n] {
            line.push(b);
            if b == b'\n' {
                lock(&said).line(&shown(&line));
                line.clear();
            }
        }
    }
    if !line.is_empty() {
        // The rank ended in mid-line (a progress bar): what follows starts on a line of its own.
        let _ = std::io::stderr().write_all(b"\n");
        lock(&said).line(&shown(&line));
    }
}

/// A pseudo-terminal (the launcher's side, the rank's side) the size of our stderr's terminal.
fn open_terminal() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (mut main, mut other) = (-1, -1);
    // SAFETY: plain libc calls on out-parameters this function owns.
    unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        let sized = libc::ioctl(2, libc::TIOCGWINSZ, &mut size) == 0;
        let size_ptr = if sized {
            &size as *const libc::winsize
        } else {
            std::ptr::null()
        };
        if libc::openpty(
            &mut main,
            &mut other,
            std::ptr::null_mut(),
            std::ptr::null(),
            size_ptr,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        // Neither end may leak into the other ranks (the rank's own copy is its stderr).
        libc::fcntl(main, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(other, libc::F_SETFD, libc::FD_CLOEXEC);
        Ok((OwnedFd::from_raw_fd(main), OwnedFd::from_raw_fd(other)))
    }
}

/// Runs in each rank between fork and exec: the rank gets SIGKILL when the launcher dies, so a
/// launcher killed outright (SIGKILL, a crash) leaves no rank training on as an orphan.
fn die_with_launcher(launcher: libc::pid_t) -> std::io::Result<()> {
    // SAFETY: async-signal-safe calls only.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // The launcher died before the request took hold: this process has a new parent.
        if libc::getppid() != launcher {
            libc::_exit(1);
        }
    }
    Ok(())
}

/// Blocks until `pid` has exited, without reaping it (so that its pid stays ours until the main
/// loop reaps it), then reports when.
fn watch_exit(rank: usize, pid: u32, tx: mpsc::Sender<(usize, Instant)>) {
    std::thread::spawn(move || {
        loop {
            // SAFETY: waitid(2) on our own child; `info` is an out-parameter.
            let r = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        let _ = tx.send((rank, Instant::now()));
    });
}

/// A signal's name (`SIGKILL`), for the summary.
fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    format!("signal {sig} ({name})")
}

/// How a rank ended, in words: `exited with status 3`, `was killed by signal 9 (SIGKILL)`.
fn how_it_ended(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!(
            "was killed by {}{}",
            signal_name(sig),
            if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            }
        ),
        (None, None) => format!("ended ({status})"),
    }
}

/// One rank as the launcher sees it.
struct Rank {
    child: Option<Child>,
    pid: u32,
    said: Arc<Mutex<Said>>,
    /// Its relay ends once the rank's stderr closes.
    relay: Option<std::thread::JoinHandle<()>>,
    ended: Option<(ExitStatus, Instant)>,
    /// Killed by the launcher (a second Ctrl-C, or after the grace period).
    killed: bool,
}

/// Runs `gantry <args>` as `nproc` ranks and waits for all of them; the exit code is the job's:
/// 0 when every rank finished, 130 when interrupted, 2 when a rank refused its input, else 1.
pub fn run(nproc: usize, args: Vec<OsString>) -> ExitCode {
    let port = match free_port() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("gantry: error: no free TCP port on 127.0.0.1 for the job's store: {e}");
            return ExitCode::from(1);
        }
    };
    let exe = crate::self_exe();
    let launcher = std::process::id() as libc::pid_t;
    let terminal = std::io::stderr().is_terminal();
    let (exit_tx, exit_rx) = mpsc::channel();
    let mut ranks: Vec<Rank> = Vec::new();
    for rank in 0..nproc {
        let mut cmd = Command::new(&exe);
        cmd.arg0("gantry").process_group(0);
        // SAFETY: the hook makes async-signal-safe calls only.
        unsafe {
            cmd.pre_exec(move || die_with_launcher(launcher));
        }
        cmd.args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env(NPROC_VAR, nproc.to_string())
            .stdin(Stdio::null());
        if rank > 0 {
            cmd.stdout(Stdio::null());
        }
        let pty = if rank == 0 && terminal {
            open_terminal().ok()
        } else {
            None
        };
        let (main_side, rank_side) = match pty {
            Some((m, r)) => (Some(m), Some(r)),
            None => (None, None),
        };
        match rank_side {
            Some(fd) => cmd.stderr(Stdio::from(fd)),
            None => cmd.stderr(Stdio::piped()),
        };
        let spawned = cmd.spawn();
        // Our copy of the rank's side of the terminal closes with `cmd`, so that the relay sees
        // the end once the rank is gone.
        drop(cmd);
        match spawned {
            Ok(mut child) => {
                let said = Arc::new(Mutex::new(Said::default()));
                let relay = {
                    let said = said.clone();
                    match (main_side, child.stderr.take()) {
                        (Some(m), _) => Some(std::thread::spawn(move || {
                            relay_terminal(std::fs::File::from(m), said)
                        })),
                        (None, Some(err)) => {
                            let prefix = if rank == 0 {
                                String::new()
                            } else {
                                format!("[rank {rank}] ")
                            };
                            Some(std::thread::spawn(move || relay_lines(err, prefix, said)))
                        }
                        (None, None) => None,
                    }
                };
                watch_exit(rank, child.id(), exit_tx.clone());
                ranks.push(Rank {
                    pid: child.id(),
                    child: Some(child),
                    said,
                    relay,
                    ended: None,
                    killed: false,
                });
            }
            Err(e) => {
                eprintln!(
                    "gantry: error: cannot start rank {rank} ({}): {e}",
                    exe.display()
                );
                for r in &mut ranks {
                    if let Some(c) = &mut r.child {
                        signal(c, libc::SIGKILL);
                        let _ = c.wait();
                    }
                }
                return ExitCode::from(1);
            }
        }
    }

    let interrupts = Arc::new(AtomicUsize::new(0));
    {
        let interrupts = interrupts.clone();
        let _ = ctrlc::set_handler(move || {
            interrupts.fetch_add(1, Ordering::SeqCst);
        });
    }
    let mut forwarded = 0;
    let mut first_failure: Option<Instant> = None;
    let mut grace_over = false;
    while ranks.iter().any(|r| r.ended.is_none()) {
        let seen = interrupts.load(Ordering::SeqCst);
        if seen > forwarded {
            let sig = if forwarded == 0 {
                libc::SIGINT
            } else {
                libc::SIGKILL
            };
            for r in &mut ranks {
                if let Some(c) = &r.child {
                    signal(c, sig);
                    r.killed |= sig == libc::SIGKILL;
                }
            }
            forwarded = seen;
        }
        if let Ok((rank, at)) = exit_rx.recv_timeout(Duration::from_millis(50)) {
            let r = &mut ranks[rank];
            if let Some(mut child) = r.child.take() {
                let status = child
                    .wait()
                    .unwrap_or_else(|_| ExitStatus::from_raw(1 << 8));
                let interrupted = forwarded > 0 && status.code() == Some(130);
                if !status.success() && !interrupted && !r.killed {
                    first_failure.get_or_insert(at);
                }
                r.ended = Some((status, at));
            }
        }
        if let Some(at) = first_failure {
            if at.elapsed() > GRACE && !grace_over {
                grace_over = true;
                for r in &mut ranks {
                    if let Some(c) = &r.child {
                        signal(c, libc::SIGKILL);
                        r.killed = true;
                    }
                }
            }
        }
    }
    // Let the relays deliver the last lines (a rank's own children may hold its stderr: bounded).
    let until = Instant::now() + Duration::from_secs(2);
    for r in &mut ranks {
        if let Some(h) = r.relay.take() {
            while !h.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
    summarise(&ranks, forwarded > 0)
}

/// The job's exit code, and the lines that explain a failed job: every other failed rank's
/// error, then (last) the rank that failed first: its exit status or signal and its last error.
fn summarise(ranks: &[Rank], interrupted: bool) -> ExitCode {
    let nproc = ranks.len();
    let status = |r: &Rank| r.ended.map(|(s, _)| s);
    let ok = |r: &Rank| status(r).is_some_and(|s| s.success());
    if ranks.iter().all(ok) {
        return ExitCode::SUCCESS;
    }
    let stopped = |r: &Rank| ok(r) || status(r).and_then(|s| s.code()) == Some(130) || r.killed;
    if interrupted && ranks.iter().all(stopped) {
        return ExitCode::from(130);
    }
    let failed: Vec<(usize, &Rank)> = ranks
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.killed && !ok(r))
        .collect();
    // The first to fail, by when it ended; a rank whose error only says that another rank failed
    // (its collective broke when that rank died) is not the cause while one that failed on its
    // own is there.
    let consequence = |r: &Rank| {
        lock(&r.said).error.as_deref().is_some_and(|e| {
            e.contains("another rank may have died or hung") || e.contains("another rank failed")
        })
    };
    let at = |r: &Rank| r.ended.map(|(_, t)| t);
    let first = failed
        .iter()
        .filter(|(_, r)| !consequence(r))
        .min_by_key(|(_, r)| at(r))
        .or_else(|| failed.iter().min_by_key(|(_, r)| at(r)))
        .map(|(i, _)| *i);
    for (i, r) in ranks.iter().enumerate() {
        if Some(i) == first {
            continue;
        }
        if r.killed && !interrupted {
            eprintln!(
                "gantry: rank {i} of {nproc} (pid {}) did not stop within {} s of the failure and was killed",
                r.pid,
                GRACE.as_secs()
            );
        } else if let (false, Some(s)) = (r.killed || ok(r), status(r)) {
            let said = lock(&r.said);
            eprintln!(
                "gantry: rank {i} of {nproc} (pid {}) then {}{}",
                r.pid,
                how_it_ended(&s),
                said.last().map(|m| format!(": {m}")).unwrap_or_default()
            );
        }
    }
    let code2 = failed
        .iter()
        .any(|(_, r)| status(r).and_then(|s| s.code()) == Some(2));
    match first {
        Some(i) => {
            let r = &ranks[i];
            let said = lock(&r.said);
            let how = status(r).map_or_else(|| "ended".to_string(), |s| how_it_ended(&s));
            eprintln!(
                "gantry: error: rank {i} of {nproc} (pid {}) {how}{}",
                r.pid,
                said.last().map(|m| format!(": {m}")).unwrap_or_default()
            );
        }
        None => eprintln!("gantry: error: the job's ranks were killed"),
    }
    ExitCode::from(if code2 { 2 } else { 1 })
}

/// A poisoned lock only means a reader thread panicked; the messages it holds are still good.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_line_is_what_it_shows() {
        assert_eq!(shown(b"plain line\n"), "plain line");
        assert_eq!(
            shown(b"\x1b[2K\rtrain: step 3/10\r\x1b[2Kgantry: error: rank 0: boom\r\n"),
            "gantry: error: rank 0: boom"
        );
    }

    #[test]
    fn error_lines_are_kept_and_progress_is_not() {
        let mut said = Said::default();
        assert!(!said.line("gantry: train: step 5, 1.0 s so far"));
        assert!(!said.line("saved runs/x/checkpoints/ckpt-0000000"));
        assert_eq!(said.last(), None);
        assert!(!said.line("thread 'main' panicked at src/x.rs:1:2:"));
        assert!(!said.line("index out of bounds"));
        assert!(!said.line("note: run with `RUST_BACKTRACE=1` to display a backtrace"));
        assert_eq!(said.last(), Some("panicked: index out of bounds"));
        assert!(!said.line("  what():  c10 error: bad"));
        assert_eq!(said.last(), Some("what():  c10 error: bad"));
        assert!(said.line("gantry: error: rank 1: data: no such file"));
        assert_eq!(said.last(), Some("rank 1: data: no such file"));
    }

    #[test]
    fn ends_are_named_with_their_signal() {
        // Raw wait statuses: exit code in the high byte, signal in the low bits.
        assert_eq!(
            how_it_ended(&ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
        assert_eq!(
            how_it_ended(&ExitStatus::from_raw(libc::SIGKILL)),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            how_it_ended(&ExitStatus::from_raw(libc::SIGSEGV | 0x80)),
            "was killed by signal 11 (SIGSEGV) (core dumped)"
        );
        assert_eq!(signal_name(64), "signal 64");
    }
}
