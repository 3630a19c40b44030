#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Static storage: below 4 GiB in a -no-pie binary, so ia32 pointers reach it. */
static char path[256];
static struct sockaddr_in sa;
static unsigned int sc_args[3];

static long int80(long nr, long a, long b, long c) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory", "r8", "r9", "r10", "r11");
    return ret;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    strncpy(path, argv[1], sizeof path - 1);
    long fd = int80(5, (long)path, 0, 0); /* ia32 open(path, O_RDONLY) */
    char buf[64];
    long n = fd >= 0 ? read((int)fd, buf, sizeof buf) : -1;
    sc_args[0] = AF_INET; sc_args[1] = SOCK_STREAM; sc_args[2] = 0;
    long s = int80(102, 1, (long)sc_args, 0); /* socketcall(SYS_SOCKET) */
    sa.sin_family = AF_INET;
    sa.sin_port = htons(atoi(argv[2]));
    sa.sin_addr.s_addr = htonl(0x7f000001);
    sc_args[0] = (unsigned)s; sc_args[1] = (unsigned)(unsigned long)&sa; sc_args[2] = sizeof sa;
    long c = int80(102, 3, (long)sc_args, 0); /* socketcall(SYS_CONNECT) */
    sc_args[0] = AF_INET; sc_args[1] = SOCK_STREAM; sc_args[2] = 0;
    long s2 = int80(102, 1, (long)sc_args, 0);
    sa.sin_port = htons(atoi(argv[2]) + 1); /* nobody listens there */
    long c2 = int80(362, s2, (long)&sa, sizeof sa); /* ia32 connect */
    printf("%d %ld %ld %ld %ld %ld\n", getpid(), fd, n, s, c, c2);
    return fd >= 0 && n > 0 && s >= 0 && c == 0 ? 0 : 1;
}
