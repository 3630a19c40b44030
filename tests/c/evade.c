/* Syscalls a credential thief can use that an agent following only the
 * usual ones misses: evade sendmmsg PORT | evade handle PATH | evade getfd PATH
 * | evade recvmmsg NAME (a DNS query for NAME to 127.0.0.53, its answer
 * received with recvmmsg, then a connect to the address it gave, port 443) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int send_many(int port) {
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port)};
    dst.sin_addr.s_addr = htonl(0x7f000001);
    char a[] = "first", b[] = "second";
    struct iovec iov[2] = {{a, sizeof a}, {b, sizeof b}};
    struct mmsghdr m[2];
    memset(m, 0, sizeof m);
    for (int i = 0; i < 2; i++) {
        m[i].msg_hdr.msg_name = &dst;
        m[i].msg_hdr.msg_namelen = sizeof dst;
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
    }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    int n = sendmmsg(s, m, 2, 0);
    printf("%d\n", n);
    return n == 2 ? 0 : 1;
}

static int open_by_handle(const char *path, const char *dir) {
    struct file_handle *h = malloc(sizeof *h + MAX_HANDLE_SZ);
    h->handle_bytes = MAX_HANDLE_SZ;
    int mount_id;
    if (name_to_handle_at(AT_FDCWD, path, h, &mount_id, 0) != 0) { perror("name_to_handle_at"); return 1; }
    int mfd = open(dir, O_RDONLY | O_DIRECTORY);
    int fd = open_by_handle_at(mfd, h, O_RDONLY);
    if (fd < 0) { perror("open_by_handle_at"); return 1; }
    char buf[64];
    printf("%d %zd\n", fd, read(fd, buf, sizeof buf));
    return 0;
}

static int steal_fd(const char *path) {
    int p[2];
    if (pipe(p) != 0) return 1;
    pid_t child = fork();
    if (child == 0) {
        int fd = open(path, O_RDONLY);
        if (write(p[1], &fd, sizeof fd) != sizeof fd) _exit(1);
        pause();
        _exit(0);
    }
    int target_fd;
    if (read(p[0], &target_fd, sizeof target_fd) != sizeof target_fd) return 1;
    int pidfd = (int)syscall(SYS_pidfd_open, child, 0);
    int fd = (int)syscall(SYS_pidfd_getfd, pidfd, target_fd, 0);
    char buf[64];
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf) : -1;
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    printf("%d %d %zd\n", child, fd, n);
    return fd >= 0 && n > 0 ? 0 : 1;
}

static int resolve_many(const char *name) {
    unsigned char q[512] = {0x42, 0x43, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
    size_t n = 12;
    for (const char *l = name; *l;) {
        size_t len = strcspn(l, ".");
        q[n++] = (unsigned char)len;
        memcpy(q + n, l, len);
        n += len;
        l += len;
        if (*l == '.') l++;
    }
    q[n++] = 0;
    q[n++] = 0; q[n++] = 1; q[n++] = 0; q[n++] = 1; /* A, IN */
    struct sockaddr_in ns = {.sin_family = AF_INET, .sin_port = htons(53)};
    ns.sin_addr.s_addr = inet_addr("127.0.0.53");
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (sendto(s, q, n, 0, (struct sockaddr *)&ns, sizeof ns) != (ssize_t)n) { perror("sendto"); return 1; }
    unsigned char answer[512];
    struct sockaddr_in from;
    struct iovec iov = {answer, sizeof answer};
    struct mmsghdr m;
    memset(&m, 0, sizeof m);
    m.msg_hdr.msg_name = &from;
    m.msg_hdr.msg_namelen = sizeof from;
    m.msg_hdr.msg_iov = &iov;
    m.msg_hdr.msg_iovlen = 1;
    struct timespec timeout = {5, 0};
    int got = recvmmsg(s, &m, 1, MSG_WAITFORONE, &timeout);
    if (got != 1 || m.msg_len < 16) { perror("recvmmsg"); return 1; }
    /* The answer's address is its last four bytes. */
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(443)};
    memcpy(&to.sin_addr, answer + m.msg_len - 4, 4);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    int r = connect(c, (struct sockaddr *)&to, sizeof to);
    printf("%s %d\n", inet_ntoa(to.sin_addr), r);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "sendmmsg")) return send_many(atoi(argv[2]));
    if (argc == 4 && !strcmp(argv[1], "handle")) return open_by_handle(argv[2], argv[3]);
    if (argc == 3 && !strcmp(argv[1], "getfd")) return steal_fd(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "recvmmsg")) return resolve_many(argv[2]);
    return 2;
}
