//! The running kernel's offsets resolved in a forked child process.
//!
//! Parsing vmlinux BTF (5 MiB here) takes about 40 MiB of heap for a moment;
//! handed back, it still stays the agent's peak RSS (VmHWM) for its whole
//! life. In a child, that memory is the child's and goes with it. What comes
//! back through a pipe: the offsets (all `u32`), then each disabled feature
//! and why, or the error.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    os::fd::{FromRawFd as _, OwnedFd},
};

use agent_common::KernelOffsets;

use super::{KernelBtf, OffsetError, Resolved, resolve};

/// [`resolve`] of the running kernel's BTF, in a child process.
pub fn resolve_running() -> Result<Resolved, OffsetError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors it creates.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(OffsetError::Apart(format!("pipe: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: both descriptors are fresh and owned here alone.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child only parses, writes to the pipe and _exits: no lock
    // another thread may hold (glibc's malloc is made safe across fork).
    match unsafe { libc::fork() } {
        -1 => Err(OffsetError::Apart(format!("fork: {}", std::io::Error::last_os_error()))),
        0 => {
            drop(read);
            let msg = encode(KernelBtf::running().and_then(|b| resolve(&b)));
            let ok = File::from(write).write_all(&msg).is_ok();
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        child => {
            drop(write);
            let mut msg = Vec::new();
            let read_result = File::from(read).read_to_end(&mut msg);
            let mut status = 0;
            // SAFETY: reaps the child forked above.
            unsafe { libc::waitpid(child, &mut status, 0) };
            read_result.map_err(|e| OffsetError::Apart(format!("reading the child's answer: {e}")))?;
            decode(&msg)
        }
    }
}

const WORDS: usize = size_of::<KernelOffsets>() / 4;
const _: () = assert!(size_of::<KernelOffsets>().is_multiple_of(4));

/// `O`, the offsets, then `feature\0why\0` per disabled feature; or `E` and the error.
fn encode(r: Result<Resolved, OffsetError>) -> Vec<u8> {
    match r {
        Ok(r) => {
            let mut v = vec![b'O'];
            // SAFETY: KernelOffsets is repr(C), u32 fields only, no padding.
            let words: [u32; WORDS] = unsafe { std::mem::transmute(r.offsets) };
            v.extend(words.iter().flat_map(|w| w.to_ne_bytes()));
            for (feature, why) in r.disabled {
                v.extend_from_slice(feature.as_bytes());
                v.push(0);
                v.extend_from_slice(why.to_string().as_bytes());
                v.push(0);
            }
            v
        }
        Err(e) => {
            let mut v = vec![b'E'];
            v.extend_from_slice(e.to_string().as_bytes());
            v
        }
    }
}

fn decode(msg: &[u8]) -> Result<Resolved, OffsetError> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match msg.split_first() {
        Some((b'O', rest)) if rest.len() >= WORDS * 4 => {
            let (words, tail) = rest.split_at(WORDS * 4);
            let mut w = [0u32; WORDS];
            for (i, c) in words.chunks_exact(4).enumerate() {
                w[i] = u32::from_ne_bytes(c.try_into().expect("4 bytes"));
            }
            // SAFETY: as in `encode`: every bit pattern of the u32s is valid.
            let offsets: KernelOffsets = unsafe { std::mem::transmute(w) };
            let parts: Vec<&[u8]> = tail.split(|&b| b == 0).collect();
            let disabled = parts
                .chunks_exact(2)
                .map(|p| (text(p[0]), OffsetError::Apart(text(p[1]))))
                .collect();
            Ok(Resolved { offsets, disabled })
        }
        Some((b'E', why)) => Err(OffsetError::Apart(text(why))),
        _ => Err(OffsetError::Apart(format!(
            "the resolving process died ({} bytes of answer)",
            msg.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_disabled_features_cross_the_pipe_intact() {
        let mut offsets = KernelOffsets::unresolved();
        offsets.task_pid = 3000;
        let r = Resolved {
            offsets,
            disabled: vec![(
                "io_uring".into(),
                OffsetError::MissingField {
                    strukt: "io_kiocb",
                    field: "opcode",
                },
            )],
        };
        let back = decode(&encode(Ok(r))).expect("decoded");
        assert_eq!(back.offsets, offsets);
        assert_eq!(back.disabled.len(), 1);
        assert_eq!(back.disabled[0].0, "io_uring");
        assert_eq!(
            back.disabled[0].1.to_string(),
            "kernel BTF has no field io_kiocb.opcode"
        );
        let err = decode(&encode(Err(OffsetError::MissingStruct { strukt: "task_struct" }))).unwrap_err();
        assert_eq!(err.to_string(), "kernel BTF has no struct task_struct");
        assert!(decode(b"").is_err());
    }

    #[test]
    fn the_running_kernel_resolves_the_same_apart_as_in_process() {
        let Ok(btf) = KernelBtf::running() else {
            eprintln!("skipped: no readable {}", super::super::VMLINUX_BTF);
            return;
        };
        let here = resolve(&btf).expect("resolves here");
        let apart = resolve_running().expect("resolves apart");
        assert_eq!(apart.offsets, here.offsets);
        assert_eq!(apart.disabled.len(), here.disabled.len());
    }
}
