//! Linux ABI constants both sides interpret (x86_64 values; stable per
//! architecture): one copy for the kernel probes and the userspace decoder.

/// Address families (`sa_family_t`).
pub const AF_UNSPEC: u16 = 0;
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Socket types (`socket.type`; the low 4 bits of `socket(2)`'s type).
pub const SOCK_STREAM: u16 = 1;
pub const SOCK_DGRAM: u16 = 2;
pub const SOCK_RAW: u16 = 3;
pub const SOCK_SEQPACKET: u16 = 5;
/// The bits of a socket type that name it (the rest are creation flags).
pub const SOCK_TYPE_MASK: u16 = 0xf;

/// `struct sockaddr` layouts: byte offsets of the fields after `sa_family`.
pub const SOCKADDR_PORT: usize = 2;
pub const SOCKADDR_IN_ADDR: usize = 4;
pub const SOCKADDR_IN6_ADDR: usize = 8;
pub const SOCKADDR_UN_PATH: usize = 2;

/// `struct mmsghdr` (sendmmsg, recvmmsg): its `struct msghdr` (56 bytes on
/// x86_64), then `msg_len`, the bytes that message moved.
pub const MMSGHDR_MSG_LEN: u64 = 56;
/// The size of one `struct mmsghdr` (padded to 8).
pub const MMSGHDR_SIZE: u64 = 64;

/// File type bits of an inode mode (`i_mode`, `st_mode`).
pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;

/// `open(2)` flags.
pub const O_ACCMODE: u64 = 3;
pub const O_RDONLY: u64 = 0;
pub const O_WRONLY: u64 = 1;
pub const O_RDWR: u64 = 2;
pub const O_CREAT: u64 = 0o100;
pub const O_TRUNC: u64 = 0o1000;
pub const O_APPEND: u64 = 0o2000;
pub const O_DIRECTORY: u64 = 0o200000;

/// `AT_FDCWD`: a path relative to the working directory (as the i32 a
/// dirfd argument holds, sign-extended).
pub const AT_FDCWD: i64 = -100;
/// `unlinkat(2)` flag: remove a directory (the call is an rmdir).
pub const AT_REMOVEDIR: u64 = 0x200;

/// `fcntl(2)` commands that duplicate a descriptor.
pub const F_DUPFD: u64 = 0;
pub const F_DUPFD_CLOEXEC: u64 = 1030;

/// The DNS port.
pub const DNS_PORT: u16 = 53;
