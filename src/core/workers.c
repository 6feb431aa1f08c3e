/* --workers N: the master process and the listening socket its workers share (see
 * sophia/workers.h). The master does nothing but supervise: it holds no connection, runs no
 * loop and no thread; it waits for signals and for its children. */
#include "sophia/workers.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sophia/access.h"
#include "sophia/core.h"
#include "sophia/log.h"

int sg_worker_count = 1;
int sg_worker_index;

/* A worker that dies within FAST_MS of its start counts as failing to start; after FAST_MAX
 * such deaths in a row the master gives up (a bad port, a broken configuration). Restarts of
 * a failing worker wait 100 ms, 200 ms, … */
#define FAST_MS 2000
#define FAST_MAX 5

typedef struct slot {
    pid_t pid;          /* 0: not running */
    uint64_t start_ms;  /* when it was forked */
    uint64_t due_ms;    /* when to start it again (not running, not stopping) */
    int fast_fails;     /* deaths within FAST_MS of the start, in a row */
    int started_before; /* a restart replaces a worker that died */
} slot_t;

int sg_reuseport_socket(const struct sockaddr *sa)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    socklen_t len =
        sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, sa, len) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int sg_listener_bind(uv_tcp_t *listener, const struct sockaddr *sa, int reuseport)
{
    if (!reuseport) return uv_tcp_bind(listener, sa, 0);
    int fd = sg_reuseport_socket(sa);
    if (fd < 0) return fd;
    int r = uv_tcp_open(listener, fd);
    if (r != 0) close(fd);
    return r;
}

static void log_exit(int i, pid_t pid, int status, int stopping)
{
    sg_logline_t l;
    int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    sg_logline_begin(&l, stopping || clean ? SG_LOG_INFO : SG_LOG_ERROR,
                     stopping ? "worker stopped" : "worker died; restarting it");
    sg_logline_int(&l, "worker", i);
    sg_logline_int(&l, "pid", (long long)pid);
    if (WIFEXITED(status)) sg_logline_int(&l, "exit_code", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) sg_logline_str(&l, "signal", strsignal(WTERMSIG(status)));
    sg_logline_emit(&l);
}

static void send_all(const slot_t *w, int n, int sig)
{
    for (int i = 0; i < n; i++)
        if (w[i].pid > 0) kill(w[i].pid, sig);
}

int sg_workers_run(int n, int *restarted)
{
    static slot_t w[SG_WORKERS_MAX];
    if (n > SG_WORKERS_MAX) n = SG_WORKERS_MAX;
    sg_worker_count = n;
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, &old);
    pid_t master = getpid();
    int stopping = 0, exit_code = 0;
    for (int i = 0; i < n; i++) w[i].due_ms = sg_now_ms();
    for (;;) {
        uint64_t now = sg_now_ms();
        for (int i = 0; i < n && !stopping; i++) {
            if (w[i].pid > 0 || w[i].due_ms > now) continue;
            pid_t pid = fork();
            if (pid == 0) {
                /* The worker: default signal mask, and it goes when the master goes. */
                sigprocmask(SIG_SETMASK, &old, NULL);
                prctl(PR_SET_PDEATHSIG, SIGTERM);
                if (getppid() != master) _exit(1);
                sg_worker_index = i;
                *restarted = w[i].started_before;
                return i;
            }
            if (pid < 0) {
                sg_log(SG_LOG_ERROR, "cannot start worker %d: %s", i, strerror(errno));
                w[i].due_ms = now + 1000;
                continue;
            }
            w[i].pid = pid;
            w[i].start_ms = now;
            w[i].started_before = 1;
        }
        struct timespec ts = {0, 200 * 1000 * 1000};
        siginfo_t si;
        int sig = sigtimedwait(&set, &si, &ts);
        if (sig == SIGHUP) {
            sg_log(SG_LOG_INFO, "SIGHUP: passed on to %d worker(s)", n);
            send_all(w, n, SIGHUP);
        } else if (sig == SIGTERM || sig == SIGINT) {
            /* The first drains, a second closes every connection now: the workers' rule. */
            stopping++;
            send_all(w, n, sig);
        }
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            int i = 0;
            while (i < n && w[i].pid != pid) i++;
            if (i == n) continue;
            w[i].pid = 0;
            log_exit(i, pid, status, stopping);
            /* Its requests died with it: what they had reserved goes back. */
            sg_scopes_release_worker(i);
            if (stopping) continue;
            now = sg_now_ms();
            w[i].fast_fails = now - w[i].start_ms < FAST_MS ? w[i].fast_fails + 1 : 0;
            if (w[i].fast_fails >= FAST_MAX) {
                sg_log(SG_LOG_ERROR,
                       "worker %d failed %d times in a row right after starting; stopping", i,
                       FAST_MAX);
                exit_code = 1;
                stopping = 1;
                send_all(w, n, SIGTERM);
                continue;
            }
            w[i].due_ms = w[i].fast_fails ? now + (100u << (w[i].fast_fails - 1)) : now;
        }
        int live = 0;
        for (int i = 0; i < n; i++) live += w[i].pid > 0;
        if (stopping && live == 0) break;
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    return -1 - exit_code;
}
