/* Operations submitted through a raw io_uring (io_uring_setup, the ring
 * mmaps, io_uring_enter: no liburing), each naming a path or an address
 * that the kernel copies when the operation is submitted; no open, connect
 * or sendmsg syscall is made.
 *   ring DIR NAME TCP_PORT UDP_PORT
 * openat(DIR's fd, NAME), a TCP connect to 127.0.0.1:TCP_PORT, a UDP
 * sendmsg to 127.0.0.1:UDP_PORT; prints each completion's result. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

struct ring {
    int fd;
    char *sq, *cq;
    struct io_uring_sqe *sqes;
    struct io_uring_params p;
};

static int setup(struct ring *r) {
    memset(&r->p, 0, sizeof r->p);
    r->fd = (int)syscall(SYS_io_uring_setup, 4, &r->p);
    if (r->fd < 0) return -1;
    int rw = PROT_READ | PROT_WRITE;
    r->sq = mmap(0, r->p.sq_off.array + r->p.sq_entries * 4, rw, MAP_SHARED, r->fd, IORING_OFF_SQ_RING);
    r->cq = mmap(0, r->p.cq_off.cqes + r->p.cq_entries * sizeof(struct io_uring_cqe), rw, MAP_SHARED, r->fd,
                 IORING_OFF_CQ_RING);
    r->sqes = mmap(0, r->p.sq_entries * sizeof(struct io_uring_sqe), rw, MAP_SHARED, r->fd, IORING_OFF_SQES);
    return r->sq == MAP_FAILED || r->cq == MAP_FAILED || r->sqes == MAP_FAILED ? -1 : 0;
}

/* Submits one operation and waits for its completion; returns its result. */
static int run(struct ring *r, const struct io_uring_sqe *e) {
    unsigned *tail = (unsigned *)(r->sq + r->p.sq_off.tail);
    unsigned mask = *(unsigned *)(r->sq + r->p.sq_off.ring_mask);
    unsigned *array = (unsigned *)(r->sq + r->p.sq_off.array);
    unsigned t = *tail, i = t & mask;
    r->sqes[i] = *e;
    array[i] = i;
    __atomic_store_n(tail, t + 1, __ATOMIC_RELEASE);
    if (syscall(SYS_io_uring_enter, r->fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) != 1) return -1000;
    unsigned *head = (unsigned *)(r->cq + r->p.cq_off.head);
    unsigned cmask = *(unsigned *)(r->cq + r->p.cq_off.ring_mask);
    struct io_uring_cqe *cqes = (struct io_uring_cqe *)(r->cq + r->p.cq_off.cqes);
    unsigned h = __atomic_load_n(head, __ATOMIC_ACQUIRE);
    int res = cqes[h & cmask].res;
    __atomic_store_n(head, h + 1, __ATOMIC_RELEASE);
    return res;
}

int main(int argc, char **argv) {
    if (argc != 5) return 2;
    struct ring r;
    if (setup(&r) != 0) { perror("io_uring_setup"); return 1; }
    int dir = open(argv[1], O_RDONLY | O_DIRECTORY);
    struct io_uring_sqe e;

    memset(&e, 0, sizeof e);
    e.opcode = IORING_OP_OPENAT;
    e.fd = dir;
    e.addr = (unsigned long)argv[2];
    e.open_flags = O_RDONLY;
    e.user_data = 0x1234;
    int opened = run(&r, &e);

    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
    to.sin_addr.s_addr = htonl(0x7f000001);
    int tcp = socket(AF_INET, SOCK_STREAM, 0);
    memset(&e, 0, sizeof e);
    e.opcode = IORING_OP_CONNECT;
    e.fd = tcp;
    e.addr = (unsigned long)&to;
    e.off = sizeof to;
    e.user_data = 0x5678;
    int connected = run(&r, &e);

    struct sockaddr_in dgram_to = to;
    dgram_to.sin_port = htons(atoi(argv[4]));
    char payload[] = "through the ring";
    struct iovec iov = {payload, sizeof payload};
    struct msghdr msg = {.msg_name = &dgram_to, .msg_namelen = sizeof dgram_to, .msg_iov = &iov, .msg_iovlen = 1};
    int udp = socket(AF_INET, SOCK_DGRAM, 0);
    memset(&e, 0, sizeof e);
    e.opcode = IORING_OP_SENDMSG;
    e.fd = udp;
    e.addr = (unsigned long)&msg;
    e.len = 1;
    e.user_data = 0x9abc;
    int sent = run(&r, &e);

    printf("open=%d connect=%d sendmsg=%d\n", opened, connected, sent);
    return opened >= 0 && connected == 0 && sent > 0 ? 0 : 1;
}
