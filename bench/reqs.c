/* Sends exactly N requests, one after the other, on one keep-alive connection, reading each
 * answer to its end (Content-Length or chunked); for measurements by request count (callgrind,
 * allocations, system calls), where wrk's run-for-a-duration does not fit.
 *
 *   build/bench/reqs PORT N PATH BODY [KEY]   (POST, JSON body, KEY as a bearer token;
 *                                             prints "ok=N errors=M")
 *
 * Exit status 0 when every answer was 200. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char in[1 << 20];
static size_t in_len;

static int fill(int fd)
{
    if (in_len == sizeof(in)) return -1;
    ssize_t n = read(fd, in + in_len, sizeof(in) - in_len);
    if (n <= 0) return -1;
    in_len += (size_t)n;
    return 0;
}

static void consume(size_t n)
{
    memmove(in, in + n, in_len - n);
    in_len -= n;
}

/* Reads one response; returns its status or -1. */
static int read_response(int fd)
{
    char *end;
    while (!(end = memmem(in, in_len, "\r\n\r\n", 4)))
        if (fill(fd) != 0) return -1;
    size_t head = (size_t)(end - in) + 4;
    int status = in_len > 12 ? atoi(in + 9) : -1;
    char *h = in;
    long clen = -1;
    int chunked = 0;
    while (h < end) {
        char *nl = memmem(h, (size_t)(end - h), "\r\n", 2);
        if (!nl) nl = end;
        if (strncasecmp(h, "content-length:", 15) == 0) clen = atol(h + 15);
        if (strncasecmp(h, "transfer-encoding:", 18) == 0 &&
            memmem(h, (size_t)(nl - h), "chunked", 7))
            chunked = 1;
        h = nl + 2;
    }
    consume(head);
    if (!chunked) {
        if (clen < 0) return -1;
        while (in_len < (size_t)clen)
            if (fill(fd) != 0) return -1;
        consume((size_t)clen);
        return status;
    }
    for (;;) {
        char *nl;
        while (!(nl = memmem(in, in_len, "\r\n", 2)))
            if (fill(fd) != 0) return -1;
        long size = strtol(in, NULL, 16);
        size_t need = (size_t)(nl - in) + 2 + (size_t)size + 2;
        while (in_len < need)
            if (fill(fd) != 0) return -1;
        consume(need);
        if (size == 0) return status;
    }
}

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: reqs PORT N PATH BODY [KEY]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    long n = atol(argv[2]);
    const char *path = argv[3], *body = argv[4];
    char req[8192], auth[512] = "";
    if (argc == 6) snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", argv[5]);
    int rl = snprintf(req, sizeof(req),
                      "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                      "%sContent-Length: %zu\r\n\r\n%s",
                      path, port, auth, strlen(body), body);
    if (rl < 0 || (size_t)rl >= sizeof(req)) return 2;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        perror("reqs: connect");
        return 1;
    }
    long ok = 0, errors = 0;
    for (long i = 0; i < n; i++) {
        if (write(fd, req, (size_t)rl) != rl) {
            errors += n - i;
            break;
        }
        int st = read_response(fd);
        if (st == 200) {
            ok++;
        } else {
            errors++;
            if (st < 0) {
                errors += n - i - 1;
                break;
            }
        }
    }
    close(fd);
    printf("ok=%ld errors=%ld\n", ok, errors);
    return errors ? 1 : 0;
}
