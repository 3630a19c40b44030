/* Run as an enforced (or audited) server: tries what the seccomp filter
 * denies and prints each result (0 or more: it ran; -errno: refused).
 *   sandboxed AGENT_PID          ptrace, io_uring_setup, kill(AGENT_PID, 0),
 *                                rt_sigqueueinfo(AGENT_PID, 0), kill(-1, 0)
 *   sandboxed AGENT_PID ia32     then an int 0x80 getpid (killed when enforced)
 *   sandboxed AGENT_PID exec     then execs /usr/bin/id (refused by Landlock
 *                                when enforced: prints exec=-errno)
 */
#include <errno.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <signal.h>
#include <unistd.h>

static long result(long r) { return r < 0 ? -errno : r; }

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    pid_t agent = (pid_t)atoi(argv[1]);
    long pt = result(ptrace(PTRACE_PEEKDATA, getpid(), 0, 0));
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    long ring = result(syscall(SYS_io_uring_setup, 1, &p));
    if (ring >= 0) close((int)ring);
    long k = result(kill(agent, 0));
    /* Signal 0: the checks only, nothing is sent. SI_QUEUE: a caller may
     * not claim a kernel si_code for another process. */
    siginfo_t info;
    memset(&info, 0, sizeof info);
    info.si_code = SI_QUEUE;
    long q = result(syscall(SYS_rt_sigqueueinfo, agent, 0, &info));
    long all = result(kill(-1, 0));
    printf("ptrace=%ld io_uring=%ld kill=%ld sigqueue=%ld killall=%ld\n", pt, ring, k, q, all);
    fflush(stdout);
    if (argc > 2 && strcmp(argv[2], "ia32") == 0) {
        long ret;
        __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory", "r8", "r9", "r10", "r11");
        printf("ia32=%ld\n", ret);
    }
    if (argc > 2 && strcmp(argv[2], "exec") == 0) {
        execl("/usr/bin/id", "id", (char *)NULL);
        printf("exec=%d\n", -errno);
    }
    return 0;
}
