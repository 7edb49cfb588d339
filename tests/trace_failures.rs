//! Tracing that breaks never breaks a call: a trace that cannot be created
//! while stderr is unwritable, a trace file that fills its file system
//! mid-run, a writer that fails. Every call still returns what it did (an
//! address for a commit that happened), nothing panics, the broken trace
//! is reported once and then no longer written.
//!
//! The cases that need `HOSTMEM_TRACE` set before any manager exists, or
//! stderr at `/dev/full`, run in a child process: this test executable
//! again, running one test with [`CHILD`] set.

use hostmem::host::{HostConfig, HostMemoryManager, MemoryCriticalLevel};
use hostmem::trace::{TraceSink, TraceStatus};
use hostmem::win32::{AllocationType, FreeType, Protection};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Set in a child: which part it plays.
const CHILD: &str = "HOSTMEM_TRACE_FAILURE_CHILD";

const RESERVE_COMMIT: AllocationType = AllocationType::RESERVE.union(AllocationType::COMMIT);

/// Runs the test `test` of this executable in a child with `env` set and
/// its stderr at `stderr`.
fn run_child(test: &str, env: &[(&str, &Path)], stderr: Stdio) -> Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", test, "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .stderr(stderr);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run the child")
}

/// In a child whose stderr may be `/dev/full`: panics are told on stdout,
/// which the parent shows.
fn report_panics_on_stdout() {
    std::panic::set_hook(Box::new(|info| println!("child: {info}")));
}

fn dev_full() -> Stdio {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full")
        .into()
}

fn assert_child_passed(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what}: the child failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// In the child: the flat API and the COM face work although the trace
/// could not be created and stderr is unwritable.
fn calls_work_without_their_trace() {
    use hostmem::ffi::com::IUnknown;
    use hostmem::ffi::com::manager::hostmem_CreateMemoryManager;
    use hostmem::ffi::flat::{hostmem_GetLastError, hostmem_VirtualAlloc, hostmem_VirtualFree};
    use std::ptr::{null, null_mut};
    let (reserve_commit, release, rw) = (0x3000, 0x8000, 0x04);
    // SAFETY: the flat API's contract: a NULL address, then an address it
    // returned.
    unsafe {
        let p = hostmem_VirtualAlloc(null_mut(), 0x1_0000, reserve_commit, rw);
        assert!(
            !p.is_null(),
            "VirtualAlloc failed with {}",
            hostmem_GetLastError()
        );
        assert_eq!(hostmem_VirtualFree(p, 0, release), 1);
    }
    let mut com = null_mut();
    // SAFETY: NULL config, a writable out pointer; the object made is
    // released once.
    unsafe {
        let hr = hostmem_CreateMemoryManager(null(), &mut com);
        assert!(hr.is_success(), "hostmem_CreateMemoryManager: {hr:?}");
        let vtbl = &*(*com).vtbl;
        let mut p = null_mut();
        let hr = (vtbl.virtual_alloc)(com, null_mut(), 0x1_0000, reserve_commit, rw, 0, &mut p);
        assert!(hr.is_success(), "COM VirtualAlloc: {hr:?}");
        assert!((vtbl.virtual_free)(com, p, 0, release).is_success());
        (vtbl.unknown.release)(com.cast::<IUnknown>());
    }
}

#[test]
fn a_trace_that_cannot_be_created_with_stderr_unwritable_fails_no_call() {
    if std::env::var_os(CHILD).is_some() {
        report_panics_on_stdout();
        calls_work_without_their_trace();
        return;
    }
    let output = run_child(
        "a_trace_that_cannot_be_created_with_stderr_unwritable_fails_no_call",
        &[(
            "HOSTMEM_TRACE",
            Path::new("/nonexistent-dir-of-hostmem/x.trace"),
        )],
        dev_full(),
    );
    assert_child_passed("stderr at /dev/full", &output);
    // With stderr readable, the failure is said once.
    let output = run_child(
        "a_trace_that_cannot_be_created_with_stderr_unwritable_fails_no_call",
        &[(
            "HOSTMEM_TRACE",
            Path::new("/nonexistent-dir-of-hostmem/x.trace"),
        )],
        Stdio::piped(),
    );
    assert_child_passed("stderr piped", &output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.matches("cannot create the trace").count(),
        1,
        "one report: {stderr}"
    );
}

/// The directory the small file system is mounted on, in the child.
const MOUNT: &str = "HOSTMEM_TRACE_FAILURE_MOUNT";

/// In the child, with `HOSTMEM_TRACE` on a small file system: fills the
/// file system, then commits until well past the point where the trace
/// can no longer be written. Every commit returns its address, and every
/// region is accounted.
fn commits_survive_a_full_disk() {
    let m = HostMemoryManager::default();
    // Fill what the trace has not taken.
    let mount = PathBuf::from(std::env::var_os(MOUNT).unwrap());
    let mut filler = std::fs::File::create(mount.join("filler")).unwrap();
    let block = vec![0u8; 4096];
    while std::io::Write::write_all(&mut filler, &block).is_ok() {}
    drop(filler);
    let mut regions = Vec::new();
    // A trace line is about 100 bytes: 400 calls need 40 kB, more than
    // the file system has left.
    for i in 0..200 {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            m.virtual_alloc(
                0,
                0x1_0000,
                RESERVE_COMMIT,
                Protection::READWRITE,
                MemoryCriticalLevel::ProcessCritical,
            )
        }));
        match result {
            Ok(Ok(p)) => regions.push(p),
            Ok(Err(e)) => panic!("commit {i} failed: {e:?}"),
            Err(_) => panic!("commit {i} panicked"),
        }
        assert_eq!(m.statistics().regions, regions.len(), "commit {i}");
    }
    for p in regions {
        m.virtual_free(p, 0, FreeType::RELEASE).unwrap();
    }
    assert_eq!(m.statistics().regions, 0);
    assert!(!m.has_failed());
}

/// Mounts a 64 KiB tmpfs on a new directory, or says why not.
fn mount_small_tmpfs() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("hostmem-full-fs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&dir)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    if status.status.success() {
        Ok(dir)
    } else {
        let _ = std::fs::remove_dir(&dir);
        Err(String::from_utf8_lossy(&status.stderr).trim().to_owned())
    }
}

fn unmount(dir: &Path) {
    let _ = Command::new("umount").arg(dir).status();
    let _ = std::fs::remove_dir(dir);
}

#[test]
fn a_trace_that_fills_its_file_system_fails_no_call() {
    if std::env::var_os(CHILD).is_some() {
        report_panics_on_stdout();
        commits_survive_a_full_disk();
        return;
    }
    let dir = match mount_small_tmpfs() {
        Ok(dir) => dir,
        Err(why) => {
            // Not root (or no mount): the fault-injecting writer of
            // `a_failing_trace_writer_fails_no_call` covers the same path.
            eprintln!("skipped: cannot mount a small tmpfs ({why})");
            return;
        }
    };
    let run = |stderr| {
        let _ = std::fs::remove_file(dir.join("filler"));
        let output = run_child(
            "a_trace_that_fills_its_file_system_fails_no_call",
            &[
                ("HOSTMEM_TRACE", &dir.join("full.trace")),
                (MOUNT, dir.as_path()),
            ],
            stderr,
        );
        let size = std::fs::metadata(dir.join("full.trace")).map(|m| m.len());
        (output, size)
    };
    let (full, _) = run(dev_full());
    let (piped, size) = run(Stdio::piped());
    unmount(&dir);
    assert_child_passed("stderr at /dev/full", &full);
    assert_child_passed("stderr piped", &piped);
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert_eq!(
        stderr.matches("cannot write the trace").count(),
        1,
        "one report: {stderr}"
    );
    assert!(
        size.is_ok_and(|s| s > 0),
        "the trace was written until full"
    );
}

/// A commit of 64 KiB, which must succeed.
fn commit(m: &HostMemoryManager) -> usize {
    m.virtual_alloc(
        0,
        0x1_0000,
        RESERVE_COMMIT,
        Protection::READWRITE,
        MemoryCriticalLevel::ProcessCritical,
    )
    .expect("the commit succeeds whatever the trace does")
}

/// A writer that takes `room` bytes, then fails every write as a full
/// disk does, counting the writes it is asked for after its first failure.
struct FillsUp {
    room: usize,
    failed: Arc<AtomicUsize>,
}

impl std::io::Write for FillsUp {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.room {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.room -= buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_trace_writer_fails_no_call_and_is_written_no_more() {
    let failed = Arc::new(AtomicUsize::new(0));
    let writer = FillsUp {
        room: 2000,
        failed: failed.clone(),
    };
    let sink = TraceSink::with_writer("fills-up.trace", writer).unwrap();
    let m = HostMemoryManager::new_unshared(HostConfig::default())
        .unwrap()
        .with_trace(Some(sink.clone()));
    assert_eq!(
        sink.status(),
        TraceStatus::Recording("fills-up.trace".into())
    );
    // 2000 bytes hold about 20 lines: the later commits meet a full disk.
    let regions: Vec<usize> = (0..100).map(|_| commit(&m)).collect();
    assert_eq!(m.statistics().regions, 100, "every commit is accounted");
    assert_eq!(
        failed.load(Ordering::SeqCst),
        1,
        "no write after the failure"
    );
    match sink.status() {
        TraceStatus::Failed { path, error } => {
            assert_eq!(path, Path::new("fills-up.trace"));
            assert!(error.contains("No space left"), "{error}");
        }
        other => panic!("the trace is not marked failed: {other:?}"),
    }
    for p in regions {
        m.virtual_free(p, 0, FreeType::RELEASE).unwrap();
    }
    assert_eq!(m.statistics().regions, 0);
    assert_eq!(failed.load(Ordering::SeqCst), 1);
    assert!(!m.has_failed());
}

/// In the child: the status a program (the CLI) reads to learn that the
/// trace it was asked for cannot be written.
fn status_says_the_trace_failed() {
    match TraceSink::env_status() {
        TraceStatus::Failed { path, error } => {
            assert_eq!(path, Path::new("/nonexistent-dir-of-hostmem/x.trace"));
            assert!(error.contains("No such file"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_trace_status_tells_a_program_its_trace_failed() {
    if std::env::var_os(CHILD).is_some() {
        report_panics_on_stdout();
        status_says_the_trace_failed();
        return;
    }
    let output = run_child(
        "the_trace_status_tells_a_program_its_trace_failed",
        &[(
            "HOSTMEM_TRACE",
            Path::new("/nonexistent-dir-of-hostmem/x.trace"),
        )],
        dev_full(),
    );
    assert_child_passed("stderr at /dev/full", &output);
}
