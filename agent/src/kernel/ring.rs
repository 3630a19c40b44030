//! The event ring's reader: the kernel's BPF ring buffer read through its
//! mapped pages, as aya's `RingBuf` reads it, except that the consumer
//! position is published once per batch (every [`PUBLISH_EVERY`] records,
//! and always before the ring is reported empty) instead of after each
//! record.
//!
//! Why not aya's `RingBuf`: each publication is a store to the cache line the
//! producing CPU reads at every reservation (`bpf_ringbuf_reserve` checks the
//! free space against it), so publishing per record moved that line between
//! the CPUs at every event, and aya's `RingBuf` has no batch API. Measured
//! (README › Performance): the reader's CPU per event 370 → 318 ns (every
//! event a JSON line, alternating binaries); the BPF time per watched openat
//! 462 → 433 ns with a patched aya on an earlier day, unchanged (420 → 420)
//! when this reader was measured.
//!
//! The protocol (kernel/bpf/ringbuf.c): page 0 holds the consumer position
//! (ours to write), page 1 the producer position, then the data pages,
//! mapped twice in a row so a record never wraps; each record is an 8-byte
//! header (length with a busy and a discard bit, page offset) and its data,
//! 8-aligned.
//!
//! Every drain ends with a publication (`daemon::run::drain`), so an agent
//! that stops hands the next one (the ring is kept across restarts) exactly
//! where it stopped; one killed mid-batch leaves at most the batch's records
//! to be read again by the next, never a record unread.

use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicUsize, Ordering, fence},
};

use aya::{
    maps::{Map, MapData, MapError},
    sys::SyscallError,
};

/// Records read between two publications of the consumer position.
pub const PUBLISH_EVERY: u32 = 64;

/// Bits of a record header's length word (include/uapi/linux/bpf.h).
const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER_BYTES: usize = 8;

/// The event ring buffer, mapped.
pub struct EventRing {
    map: MapData,
    /// Page 0, read-write: the consumer position.
    consumer: Mapping,
    /// Page 1 (the producer position) and the data pages twice, read-only.
    producer: Mapping,
    page: usize,
    mask: usize,
    /// Where the next record is (all before it read and done with).
    pos: usize,
    /// The size of the record last handed out, still being read.
    lent: usize,
    /// Records read since the last publication.
    unpublished: u32,
    /// The producer position last read.
    producer_pos: usize,
}

impl TryFrom<Map> for EventRing {
    type Error = MapError;

    fn try_from(map: Map) -> Result<Self, MapError> {
        match map {
            Map::RingBuf(data) => Self::new(data),
            // BPF_MAP_TYPE_RINGBUF is 27; any other variant is not one.
            _ => Err(MapError::InvalidMapType { map_type: u32::MAX }),
        }
    }
}

impl EventRing {
    fn new(map: MapData) -> Result<Self, MapError> {
        let bytes = map.info()?.max_entries() as usize;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4096, |p| p as usize);
        if !bytes.is_power_of_two() || bytes < page {
            return Err(MapError::InvalidMapType { map_type: u32::MAX });
        }
        let fd = map.fd().as_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + 2 * bytes, libc::PROT_READ, page)?;
        let pos = consumer.word().load(Ordering::Acquire);
        let producer_pos = producer.word().load(Ordering::Acquire);
        Ok(Self {
            map,
            consumer,
            producer,
            page,
            mask: bytes - 1,
            pos,
            lent: 0,
            unpublished: 0,
            producer_pos,
        })
    }

    /// The next record, if one is committed; `None` once the ring is read
    /// up to the producer (the consumer position is then published, so the
    /// producer's next commit finds the reader caught up and wakes it).
    #[allow(clippy::should_implement_trait)] // yields a borrow of the ring
    pub fn next(&mut self) -> Option<&[u8]> {
        self.done_with_lent();
        if self.unpublished >= PUBLISH_EVERY {
            self.publish();
        }
        loop {
            if self.pos == self.producer_pos {
                self.producer_pos = self.producer.word().load(Ordering::Acquire);
                if self.pos == self.producer_pos && !self.publish_and_fence() {
                    return None;
                }
                continue;
            }
            let at = self.pos & self.mask;
            // SAFETY: `at` is below the data size, and the data pages are
            // mapped twice: the header's 4 bytes are in the mapping, aligned
            // (records are 8-aligned).
            let header = unsafe { &*self.producer.at(self.page + at).cast::<AtomicU32>() };
            // Paired with the kernel's fully ordered commit (xchg): the
            // record's data is visible once the busy bit is clear.
            let header = header.load(Ordering::Acquire);
            if header & BUSY_BIT != 0 {
                // Reserved, not yet committed: after publishing, either this
                // sees the commit or its producer sees the reader caught up.
                if self.publish_and_fence() {
                    continue;
                }
                return None;
            }
            let len = (header & !(BUSY_BIT | DISCARD_BIT)) as usize & self.mask;
            let size = (HEADER_BYTES + len).next_multiple_of(8);
            if header & DISCARD_BIT != 0 {
                self.pos = self.pos.wrapping_add(size);
                self.unpublished += 1;
                continue;
            }
            self.lent = size;
            // SAFETY: the record's data follows its header within the double
            // mapping (`at + 8 + len` <= twice the data size); the kernel does
            // not reuse it before the consumer position passes it, which
            // happens only after this borrow ends (`done_with_lent`).
            return Some(unsafe { std::slice::from_raw_parts(self.producer.at(self.page + at + HEADER_BYTES), len) });
        }
    }

    /// Publishes the consumer position (after the record last handed out).
    pub fn publish(&mut self) {
        self.done_with_lent();
        if self.unpublished > 0 {
            // Paired with the kernel's acquire before it reuses the space.
            self.consumer.word().store(self.pos, Ordering::Release);
            self.unpublished = 0;
        }
    }

    /// Publishes when behind; true when it did (then fenced: the caller
    /// looks at the ring again).
    fn publish_and_fence(&mut self) -> bool {
        if self.unpublished == 0 {
            return false;
        }
        self.publish();
        fence(Ordering::SeqCst);
        self.producer_pos = self.producer.word().load(Ordering::Acquire);
        true
    }

    fn done_with_lent(&mut self) {
        if self.lent > 0 {
            self.pos = self.pos.wrapping_add(self.lent);
            self.lent = 0;
            self.unpublished += 1;
        }
    }
}

impl AsFd for EventRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.fd().as_fd()
    }
}

impl AsRawFd for EventRing {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// One shared mapping of the ring's fd, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; every access to what the
// kernel writes goes through atomics, and the reader is one thread.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, len: usize, prot: libc::c_int, offset: usize) -> Result<Self, SyscallError> {
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks
        // the length, protection and offset against the ring.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(SyscallError {
                call: "mmap",
                io_error: std::io::Error::last_os_error(),
            });
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| SyscallError {
            call: "mmap",
            io_error: std::io::Error::other("mmap returned a null pointer"),
        })?;
        Ok(Self { ptr, len })
    }

    /// The position word at the mapping's start.
    fn word(&self) -> &AtomicUsize {
        // SAFETY: page-aligned, in the mapping, and only ever accessed
        // atomically (by the kernel too).
        unsafe { &*self.ptr.as_ptr().cast::<AtomicUsize>() }
    }

    /// A pointer `offset` bytes in (the caller keeps it in the mapping).
    fn at(&self, offset: usize) -> *const u8 {
        debug_assert!(offset < self.len);
        // SAFETY: within the mapping (checked by the callers' arithmetic).
        unsafe { self.ptr.as_ptr().add(offset) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
