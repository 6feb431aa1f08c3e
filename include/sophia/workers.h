/* --workers N: N single-threaded gateway processes on one port (SO_REUSEPORT: the kernel
 * spreads new connections over their sockets), forked and supervised by a master process that
 * restarts a worker that dies and passes SIGHUP, SIGTERM and SIGINT on to every worker.
 *
 * What the workers share and what each keeps is in docs/workers.md: rate limit buckets and
 * budgets are shared (sophia/access.h, sg_scopes_share); breakers, health checks, the Responses
 * store and /metrics are per worker. */
#ifndef SOPHIA_WORKERS_H
#define SOPHIA_WORKERS_H

#include <sys/socket.h>
#include <uv.h>

/* A listening TCP socket bound to sa with SO_REUSEADDR and SO_REUSEPORT, non-blocking and
 * close-on-exec, ready for uv_tcp_open; or a negative errno. */
int sg_reuseport_socket(const struct sockaddr *sa);
/* Binds the listener to sa: as usual, or with reuseport (--workers) on a socket of its own
 * from sg_reuseport_socket (libuv before 1.49 cannot ask for SO_REUSEPORT itself). Returns 0
 * or a libuv error. */
int sg_listener_bind(uv_tcp_t *listener, const struct sockaddr *sa, int reuseport);

/* Forks n workers and supervises them. Returns in each worker (its index, 0..n-1, also in
 * sg_worker_index; *restarted is 1 when it replaces one that died); in the master it returns
 * -1 - exit_code once every worker has stopped after SIGTERM/SIGINT (exit code 0), or when
 * workers keep failing at start (1). Signals must not have handlers installed yet, and the
 * process must have no other thread. */
int sg_workers_run(int n, int *restarted);

#endif
