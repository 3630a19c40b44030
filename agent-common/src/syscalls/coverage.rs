//! Every x86_64 syscall decided: followed (an entry in [`super::ALL`], with
//! its family and operation) or deliberately not followed, with the reason.
//! Data for userspace, tests and documentation only: the probes dispatch on
//! [`super::family`] and never read this table. `mcpwatch syscalls` prints it.
//!
//! A kernel that adds a syscall makes [`tests`] fail until the number is
//! decided here (or followed in the table above).

use core::ops::RangeInclusive;

use super::{Syscall, lookup};

/// Highest x86_64 syscall number (Linux 6.18: file_setattr).
pub const MAX: u32 = 469;

/// Numbers between the last legacy syscall and the first one numbered in
/// common with the other architectures: not syscalls on x86_64 (`-ENOSYS`).
pub const UNUSED: RangeInclusive<u32> = 337..=423;

const FD: &str = "acts on a descriptor whose open, socket, accept or pipe is reported (stdio is captured)";
const META: &str = "reads metadata, names or change notifications: no file content, no change";
const MEM: &str = "the memory of the process itself: no file, network or privilege effect";
const SIG: &str = "signals, timers and waiting: no file, network or privilege effect";
const IDS: &str = "reads the process's own identity, limits or system information";
const SCHED: &str = "the process's own scheduling, limits or attributes: no file, network or privilege effect";
const PROC: &str = "process lifecycle: followed by the fork, exec and exit tracepoints, not the syscall";
const IPC: &str = "System V and POSIX IPC between local processes: no file or network effect (not followed)";
const CREATE: &str = "creates a pipe or an unconnected socket: its connect, bind, send and accept are followed";
const AIO: &str = "Linux AIO on descriptors whose open is reported";
const URING: &str = "operations of a ring whose io_uring_setup is reported (evasion.io_uring)";
const CWD: &str = "the working directory: read in the kernel for every relative path reported";
const ATTR: &str = "timestamps or extended attributes: metadata only, not followed";
const MKNOD: &str = "creates a device, FIFO or socket node (a device needs CAP_MKNOD): not followed";
const ADMIN: &str = "administration needing a capability a server should never hold (CAP_SYS_ADMIN, \
                     CAP_SYS_BOOT, CAP_SYS_TIME...): not followed";
const NS: &str =
    "enters or creates namespaces: what the process does inside is followed (paths resolved by the kernel)";
const KEYS: &str = "the kernel keyring: not followed";
const SANDBOX: &str = "narrows what the process may do (seccomp, Landlock): nothing gained";
const NOSYS: &str = "not implemented on this kernel (returns -ENOSYS)";
const UPROBE: &str = "entered only from the kernel's uprobe trampolines";
const HANDLE: &str = "returns a handle and opens nothing: the open by handle (open_by_handle_at) is followed";
const MEMFD: &str = "an anonymous memory file: an exec of it is reported as fileless";
const PIDFD: &str = "a handle on another process: what it is used for (pidfd_getfd) is followed";

/// (number, name, reason) of every x86_64 syscall the probes do not follow.
#[rustfmt::skip]
pub const NOT_FOLLOWED: &[(u32, &str, &str)] = &[
    (3, "close", FD),
    (4, "stat", META),
    (5, "fstat", FD),
    (6, "lstat", META),
    (7, "poll", FD),
    (8, "lseek", FD),
    (9, "mmap", MEM),
    (10, "mprotect", MEM),
    (11, "munmap", MEM),
    (12, "brk", MEM),
    (13, "rt_sigaction", SIG),
    (14, "rt_sigprocmask", SIG),
    (15, "rt_sigreturn", SIG),
    (16, "ioctl", FD),
    (17, "pread64", FD),
    (18, "pwrite64", FD),
    (21, "access", META),
    (22, "pipe", CREATE),
    (23, "select", FD),
    (24, "sched_yield", SIG),
    (25, "mremap", MEM),
    (26, "msync", MEM),
    (27, "mincore", MEM),
    (28, "madvise", MEM),
    (29, "shmget", IPC),
    (30, "shmat", IPC),
    (31, "shmctl", IPC),
    (34, "pause", SIG),
    (35, "nanosleep", SIG),
    (36, "getitimer", SIG),
    (37, "alarm", SIG),
    (38, "setitimer", SIG),
    (39, "getpid", IDS),
    (40, "sendfile", FD),
    (41, "socket", CREATE),
    (48, "shutdown", FD),
    (51, "getsockname", FD),
    (52, "getpeername", FD),
    (53, "socketpair", CREATE),
    (54, "setsockopt", FD),
    (55, "getsockopt", FD),
    (56, "clone", PROC),
    (57, "fork", PROC),
    (58, "vfork", PROC),
    (60, "exit", PROC),
    (61, "wait4", SIG),
    (62, "kill", SIG),
    (63, "uname", IDS),
    (64, "semget", IPC),
    (65, "semop", IPC),
    (66, "semctl", IPC),
    (67, "shmdt", IPC),
    (68, "msgget", IPC),
    (69, "msgsnd", IPC),
    (70, "msgrcv", IPC),
    (71, "msgctl", IPC),
    (73, "flock", FD),
    (74, "fsync", FD),
    (75, "fdatasync", FD),
    (78, "getdents", META),
    (79, "getcwd", META),
    (80, "chdir", CWD),
    (81, "fchdir", CWD),
    (89, "readlink", META),
    (95, "umask", SCHED),
    (96, "gettimeofday", IDS),
    (97, "getrlimit", IDS),
    (98, "getrusage", IDS),
    (99, "sysinfo", IDS),
    (100, "times", IDS),
    (102, "getuid", IDS),
    (103, "syslog", ADMIN),
    (104, "getgid", IDS),
    (107, "geteuid", IDS),
    (108, "getegid", IDS),
    (109, "setpgid", SCHED),
    (110, "getppid", IDS),
    (111, "getpgrp", IDS),
    (112, "setsid", SCHED),
    (115, "getgroups", IDS),
    (118, "getresuid", IDS),
    (120, "getresgid", IDS),
    (121, "getpgid", IDS),
    (124, "getsid", IDS),
    (125, "capget", IDS),
    (127, "rt_sigpending", SIG),
    (128, "rt_sigtimedwait", SIG),
    (129, "rt_sigqueueinfo", SIG),
    (130, "rt_sigsuspend", SIG),
    (131, "sigaltstack", SIG),
    (132, "utime", ATTR),
    (133, "mknod", MKNOD),
    (134, "uselib", NOSYS),
    (135, "personality", SCHED),
    (136, "ustat", META),
    (137, "statfs", META),
    (138, "fstatfs", FD),
    (139, "sysfs", META),
    (140, "getpriority", IDS),
    (141, "setpriority", SCHED),
    (142, "sched_setparam", SCHED),
    (143, "sched_getparam", IDS),
    (144, "sched_setscheduler", SCHED),
    (145, "sched_getscheduler", IDS),
    (146, "sched_get_priority_max", IDS),
    (147, "sched_get_priority_min", IDS),
    (148, "sched_rr_get_interval", IDS),
    (149, "mlock", MEM),
    (150, "munlock", MEM),
    (151, "mlockall", MEM),
    (152, "munlockall", MEM),
    (153, "vhangup", ADMIN),
    (154, "modify_ldt", SCHED),
    (155, "pivot_root", ADMIN),
    (156, "_sysctl", NOSYS),
    (157, "prctl", SCHED),
    (158, "arch_prctl", SCHED),
    (159, "adjtimex", ADMIN),
    (160, "setrlimit", SCHED),
    (161, "chroot", ADMIN),
    (162, "sync", FD),
    (163, "acct", ADMIN),
    (164, "settimeofday", ADMIN),
    (166, "umount2", ADMIN),
    (167, "swapon", ADMIN),
    (168, "swapoff", ADMIN),
    (169, "reboot", ADMIN),
    (170, "sethostname", ADMIN),
    (171, "setdomainname", ADMIN),
    (172, "iopl", ADMIN),
    (173, "ioperm", ADMIN),
    (174, "create_module", NOSYS),
    (176, "delete_module", ADMIN),
    (177, "get_kernel_syms", NOSYS),
    (178, "query_module", NOSYS),
    (179, "quotactl", ADMIN),
    (180, "nfsservctl", NOSYS),
    (181, "getpmsg", NOSYS),
    (182, "putpmsg", NOSYS),
    (183, "afs_syscall", NOSYS),
    (184, "tuxcall", NOSYS),
    (185, "security", NOSYS),
    (186, "gettid", IDS),
    (187, "readahead", FD),
    (188, "setxattr", ATTR),
    (189, "lsetxattr", ATTR),
    (190, "fsetxattr", ATTR),
    (191, "getxattr", META),
    (192, "lgetxattr", META),
    (193, "fgetxattr", META),
    (194, "listxattr", META),
    (195, "llistxattr", META),
    (196, "flistxattr", META),
    (197, "removexattr", ATTR),
    (198, "lremovexattr", ATTR),
    (199, "fremovexattr", ATTR),
    (200, "tkill", SIG),
    (201, "time", IDS),
    (202, "futex", SIG),
    (203, "sched_setaffinity", SCHED),
    (204, "sched_getaffinity", IDS),
    (205, "set_thread_area", SCHED),
    (206, "io_setup", AIO),
    (207, "io_destroy", AIO),
    (208, "io_getevents", AIO),
    (209, "io_submit", AIO),
    (210, "io_cancel", AIO),
    (211, "get_thread_area", SCHED),
    (212, "lookup_dcookie", NOSYS),
    (213, "epoll_create", FD),
    (214, "epoll_ctl_old", NOSYS),
    (215, "epoll_wait_old", NOSYS),
    (216, "remap_file_pages", MEM),
    (217, "getdents64", META),
    (218, "set_tid_address", SCHED),
    (219, "restart_syscall", SIG),
    (220, "semtimedop", IPC),
    (221, "fadvise64", FD),
    (222, "timer_create", SIG),
    (223, "timer_settime", SIG),
    (224, "timer_gettime", SIG),
    (225, "timer_getoverrun", SIG),
    (226, "timer_delete", SIG),
    (227, "clock_settime", ADMIN),
    (228, "clock_gettime", SIG),
    (229, "clock_getres", SIG),
    (230, "clock_nanosleep", SIG),
    (231, "exit_group", PROC),
    (232, "epoll_wait", FD),
    (233, "epoll_ctl", FD),
    (234, "tgkill", SIG),
    (235, "utimes", ATTR),
    (236, "vserver", NOSYS),
    (237, "mbind", MEM),
    (238, "set_mempolicy", MEM),
    (239, "get_mempolicy", MEM),
    (240, "mq_open", IPC),
    (241, "mq_unlink", IPC),
    (242, "mq_timedsend", IPC),
    (243, "mq_timedreceive", IPC),
    (244, "mq_notify", IPC),
    (245, "mq_getsetattr", IPC),
    (246, "kexec_load", ADMIN),
    (247, "waitid", SIG),
    (248, "add_key", KEYS),
    (249, "request_key", KEYS),
    (250, "keyctl", KEYS),
    (251, "ioprio_set", SCHED),
    (252, "ioprio_get", IDS),
    (253, "inotify_init", META),
    (254, "inotify_add_watch", META),
    (255, "inotify_rm_watch", META),
    (256, "migrate_pages", MEM),
    (259, "mknodat", MKNOD),
    (261, "futimesat", ATTR),
    (262, "newfstatat", META),
    (267, "readlinkat", META),
    (269, "faccessat", META),
    (270, "pselect6", FD),
    (271, "ppoll", FD),
    (272, "unshare", NS),
    (273, "set_robust_list", SIG),
    (274, "get_robust_list", SIG),
    (275, "splice", FD),
    (276, "tee", FD),
    (277, "sync_file_range", FD),
    (278, "vmsplice", FD),
    (279, "move_pages", MEM),
    (280, "utimensat", ATTR),
    (281, "epoll_pwait", FD),
    (282, "signalfd", SIG),
    (283, "timerfd_create", SIG),
    (284, "eventfd", SIG),
    (285, "fallocate", FD),
    (286, "timerfd_settime", SIG),
    (287, "timerfd_gettime", SIG),
    (289, "signalfd4", SIG),
    (290, "eventfd2", SIG),
    (291, "epoll_create1", FD),
    (293, "pipe2", CREATE),
    (294, "inotify_init1", META),
    (295, "preadv", FD),
    (296, "pwritev", FD),
    (297, "rt_tgsigqueueinfo", SIG),
    (298, "perf_event_open", ADMIN),
    (300, "fanotify_init", ADMIN),
    (301, "fanotify_mark", ADMIN),
    (302, "prlimit64", SCHED),
    (303, "name_to_handle_at", HANDLE),
    (305, "clock_adjtime", ADMIN),
    (306, "syncfs", FD),
    (308, "setns", NS),
    (309, "getcpu", IDS),
    (312, "kcmp", IDS),
    (314, "sched_setattr", SCHED),
    (315, "sched_getattr", IDS),
    (317, "seccomp", SANDBOX),
    (318, "getrandom", IDS),
    (319, "memfd_create", MEMFD),
    (320, "kexec_file_load", ADMIN),
    (323, "userfaultfd", MEM),
    (324, "membarrier", MEM),
    (325, "mlock2", MEM),
    (326, "copy_file_range", FD),
    (327, "preadv2", FD),
    (328, "pwritev2", FD),
    (329, "pkey_mprotect", MEM),
    (330, "pkey_alloc", MEM),
    (331, "pkey_free", MEM),
    (332, "statx", META),
    (333, "io_pgetevents", AIO),
    (334, "rseq", MEM),
    (335, "uretprobe", UPROBE),
    (336, "uprobe", UPROBE),
    (424, "pidfd_send_signal", SIG),
    (426, "io_uring_enter", URING),
    (427, "io_uring_register", URING),
    (428, "open_tree", ADMIN),
    (429, "move_mount", ADMIN),
    (430, "fsopen", ADMIN),
    (431, "fsconfig", ADMIN),
    (432, "fsmount", ADMIN),
    (433, "fspick", ADMIN),
    (434, "pidfd_open", PIDFD),
    (435, "clone3", PROC),
    (436, "close_range", FD),
    (439, "faccessat2", META),
    (440, "process_madvise", MEM),
    (441, "epoll_pwait2", FD),
    (442, "mount_setattr", ADMIN),
    (443, "quotactl_fd", ADMIN),
    (444, "landlock_create_ruleset", SANDBOX),
    (445, "landlock_add_rule", SANDBOX),
    (446, "landlock_restrict_self", SANDBOX),
    (447, "memfd_secret", MEM),
    (448, "process_mrelease", MEM),
    (449, "futex_waitv", SIG),
    (450, "set_mempolicy_home_node", MEM),
    (451, "cachestat", FD),
    (453, "map_shadow_stack", MEM),
    (454, "futex_wake", SIG),
    (455, "futex_wait", SIG),
    (456, "futex_requeue", SIG),
    (457, "statmount", META),
    (458, "listmount", META),
    (459, "lsm_get_self_attr", IDS),
    (460, "lsm_set_self_attr", SCHED),
    (461, "lsm_list_modules", IDS),
    (462, "mseal", MEM),
    (463, "setxattrat", ATTR),
    (464, "getxattrat", META),
    (465, "listxattrat", META),
    (466, "removexattrat", ATTR),
    (467, "open_tree_attr", ADMIN),
    (468, "file_getattr", META),
    (469, "file_setattr", ATTR),
];

/// What the agent does with one x86_64 syscall number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Followed(&'static Syscall),
    NotFollowed {
        name: &'static str,
        reason: &'static str,
    },
    /// Not a syscall on x86_64.
    Unused,
}

/// The decision for `nr`; `None` above [`MAX`] (a kernel newer than this table).
pub fn decision(nr: u32) -> Option<Decision> {
    if let Some(s) = lookup(nr) {
        return Some(Decision::Followed(s));
    }
    if UNUSED.contains(&nr) {
        return Some(Decision::Unused);
    }
    NOT_FOLLOWED
        .iter()
        .find(|(n, ..)| *n == nr)
        .map(|&(_, name, reason)| Decision::NotFollowed { name, reason })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::HashSet;

    use super::{super::ALL, *};

    #[test]
    fn every_x86_64_number_is_decided_exactly_once() {
        for nr in 0..=MAX {
            let followed = ALL.iter().filter(|s| s.nr == nr).count();
            let not = NOT_FOLLOWED.iter().filter(|(n, ..)| *n == nr).count();
            let unused = usize::from(UNUSED.contains(&nr));
            assert_eq!(
                followed + not + unused,
                1,
                "x86_64 syscall {nr}: decided {} times",
                followed + not + unused
            );
            assert!(decision(nr).is_some());
        }
        assert!(NOT_FOLLOWED.iter().all(|(n, ..)| *n <= MAX));
        assert_eq!(decision(MAX + 1), None);
    }

    #[test]
    fn names_are_unique_across_followed_and_not_and_every_reason_is_given() {
        let mut names = HashSet::new();
        for s in ALL {
            assert!(names.insert(s.name), "{} twice", s.name);
        }
        for (nr, name, reason) in NOT_FOLLOWED {
            assert!(names.insert(*name), "{name} ({nr}) twice");
            assert!(!reason.is_empty());
        }
    }

    #[test]
    fn decisions_name_what_a_thief_would_use() {
        assert!(matches!(decision(304), Some(Decision::Followed(s)) if s.name == "open_by_handle_at"));
        assert!(matches!(decision(438), Some(Decision::Followed(s)) if s.name == "pidfd_getfd"));
        assert!(matches!(decision(307), Some(Decision::Followed(s)) if s.name == "sendmmsg"));
        assert!(matches!(decision(5), Some(Decision::NotFollowed { name: "fstat", .. })));
        assert_eq!(decision(400), Some(Decision::Unused));
    }
}
