/* Run as an enforced (or audited) server: each argument is one network
 * operation, printed as `ARG=RESULT` (0: it worked; -errno: refused; for a
 * resolve, the IPv4 address or `gai<code>`).
 *   resolve,NAME          getaddrinfo (IPv4 only: one A query)
 *   tcp,ADDR,PORT         connect from an IPv4 socket
 *   tcp6,ADDR6,PORT       connect from an IPv6 socket (e.g. ::ffff:127.0.0.1)
 *   udp,ADDR,PORT         sendto from an unconnected IPv4 socket
 *   wait,PATH             waits (up to 60 s) until PATH exists: 0, or -ETIMEDOUT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static long op(char *arg) {
    char *kind = strtok(arg, ","), *a = strtok(NULL, ","), *p = strtok(NULL, ",");
    if (!kind || !a) return -EINVAL;
    if (strcmp(kind, "wait") == 0) {
        /* access() is metadata: Landlock does not restrict it. */
        for (int i = 0; i < 6000; i++) {
            if (access(a, F_OK) == 0) return 0;
            usleep(10000);
        }
        return -ETIMEDOUT;
    }
    if (strcmp(kind, "resolve") == 0) {
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
        int r = getaddrinfo(a, NULL, &hints, &res);
        if (r != 0) {
            printf("gai%d\n", r);
            return 1;
        }
        char buf[64];
        inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, buf, sizeof buf);
        printf("%s\n", buf);
        freeaddrinfo(res);
        return 1;
    }
    if (!p) return -EINVAL;
    int port = atoi(p);
    long r;
    if (strcmp(kind, "tcp6") == 0) {
        struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
        inet_pton(AF_INET6, a, &sa.sin6_addr);
        int s = socket(AF_INET6, SOCK_STREAM, 0);
        r = connect(s, (struct sockaddr *)&sa, sizeof sa) < 0 ? -errno : 0;
        close(s);
        return r;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, a, &sa.sin_addr);
    if (strcmp(kind, "udp") == 0) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        r = sendto(s, "x", 1, 0, (struct sockaddr *)&sa, sizeof sa) < 0 ? -errno : 0;
        close(s);
        return r;
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    r = connect(s, (struct sockaddr *)&sa, sizeof sa) < 0 ? -errno : 0;
    close(s);
    return r;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        printf("%s=", argv[i]);
        char *copy = strdup(argv[i]);
        long r = op(copy);
        if (r <= 0) printf("%ld\n", r);
        free(copy);
        fflush(stdout);
    }
    return 0;
}
