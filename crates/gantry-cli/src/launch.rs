//! `gantry train --nproc N`: starts N processes of this binary as the ranks of one job on this
//! machine, the way torchrun's standalone mode does: each gets `RANK`, `LOCAL_RANK`,
//! `WORLD_SIZE`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR=127.0.0.1` and a free `MASTER_PORT`, and joins
//! the job through torch's c10d (`gantry::dist`). Multi-machine jobs use torchrun or a scheduler
//! instead, which set the same variables.
//!
//! Rank 0 keeps this terminal (its progress and messages); the others' messages come through
//! prefixed with their rank. The children run in their own process group, so Ctrl-C reaches
//! this launcher only, which passes one SIGINT to every rank (they stop at the same step and rank
//! 0 saves once); a second Ctrl-C kills them. When a rank fails, the others are given a grace
//! period to fail on their own (their next collective does) and are then killed.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// After the first rank fails, how long the others may take to stop by themselves.
const GRACE: Duration = Duration::from_secs(30);

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
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
    let errors: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let mut children = Vec::new();
    for rank in 0..nproc {
        let mut cmd = Command::new(&exe);
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.arg0("gantry").process_group(0);
        }
        cmd.args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .stdin(Stdio::null());
        if rank > 0 {
            cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        }
        match cmd.spawn() {
            Ok(mut child) => {
                if let Some(err) = child.stderr.take() {
                    let errors = errors.clone();
                    std::thread::spawn(move || {
                        for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
                            match line.strip_prefix("gantry: error: ") {
                                Some(msg) => lock(&errors).push((rank, msg.to_string())),
                                None => eprintln!("[rank {rank}] {line}"),
                            }
                        }
                    });
                }
                children.push(Some(child));
            }
            Err(e) => {
                eprintln!(
                    "gantry: error: cannot start rank {rank} ({}): {e}",
                    exe.display()
                );
                for c in children.iter_mut().flatten() {
                    signal(c, libc::SIGKILL);
                    let _ = c.wait();
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
    let mut codes: Vec<Option<i32>> = vec![None; nproc];
    let mut forwarded = 0;
    let mut first_failure: Option<(usize, Instant)> = None;
    let killed = AtomicBool::new(false);
    while codes.iter().any(Option::is_none) {
        let seen = interrupts.load(Ordering::SeqCst);
        if seen > forwarded {
            let sig = if forwarded == 0 {
                libc::SIGINT
            } else {
                libc::SIGKILL
            };
            for c in children.iter().flatten() {
                signal(c, sig);
            }
            forwarded = seen;
        }
        for (rank, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                // Killed by a signal: 128 + signal, as shells report it.
                let code = status.code().unwrap_or_else(|| {
                    #[cfg(unix)]
                    {
                        use std::os::unix::process::ExitStatusExt;
                        128 + status.signal().unwrap_or(9)
                    }
                    #[cfg(not(unix))]
                    {
                        1
                    }
                });
                codes[rank] = Some(code);
                *slot = None;
                let interrupted = forwarded > 0 && code == 130;
                if code != 0 && !interrupted && first_failure.is_none() {
                    first_failure = Some((rank, Instant::now()));
                }
            }
        }
        if let Some((_, at)) = first_failure {
            if at.elapsed() > GRACE && !killed.swap(true, Ordering::SeqCst) {
                for c in children.iter().flatten() {
                    signal(c, libc::SIGKILL);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let the stderr threads deliver the last lines.
    std::thread::sleep(Duration::from_millis(100));
    let codes: Vec<i32> = codes.into_iter().map(|c| c.unwrap_or(1)).collect();
    if codes.iter().all(|&c| c == 0) {
        return ExitCode::SUCCESS;
    }
    if forwarded > 0 && codes.iter().all(|&c| c == 0 || c == 130) {
        return ExitCode::from(130);
    }
    // Rank 0 printed its own error; when it did not fail, the first failing rank's error comes
    // through here, once.
    let rank0_failed = codes[0] != 0 && codes[0] != 130;
    if !rank0_failed {
        let (rank, _) = first_failure.unwrap_or((0, Instant::now()));
        let errs = lock(&errors);
        let msg = errs
            .iter()
            .find(|(r, _)| *r == rank)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| format!("exited with status {}", codes[rank]));
        eprintln!("gantry: error: rank {rank} of {nproc}: {msg}");
    }
    ExitCode::from(if codes.contains(&2) { 2 } else { 1 })
}

/// A poisoned lock only means a reader thread panicked; the messages it holds are still good.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
