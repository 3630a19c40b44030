/* Syscalls a credential thief can use that an agent following only the
 * usual ones misses: evade sendmmsg PORT | evade handle PATH | evade getfd PATH */
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

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "sendmmsg")) return send_many(atoi(argv[2]));
    if (argc == 4 && !strcmp(argv[1], "handle")) return open_by_handle(argv[2], argv[3]);
    if (argc == 3 && !strcmp(argv[1], "getfd")) return steal_fd(argv[2]);
    return 2;
}
