/* ferry_redis.c - see ferry_redis.h */
#include "ferry_redis.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define FR_MAX_SERVERS 8     /* servers alive at once, for the atexit handler */
#define FR_START_MS    5000u /* how long a start waits for PONG */
#define FR_PORT_TRIES  5

static pid_t fr_pids[FR_MAX_SERVERS];
static int fr_atexit_set;

static uint64_t fr_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void fr_reap(pid_t pid)
{
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

static void fr_kill_all(void)
{
	int i;

	for (i = 0; i < FR_MAX_SERVERS; i++) {
		if (fr_pids[i] > 0)
			fr_reap(fr_pids[i]);
		fr_pids[i] = 0;
	}
}

static void fr_track(pid_t pid, pid_t old)
{
	int i;

	for (i = 0; i < FR_MAX_SERVERS; i++) {
		if (fr_pids[i] == old) {
			fr_pids[i] = pid;
			return;
		}
	}
}

int ferry_redis_free_port(void)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd < 0)
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/* 1 when 127.0.0.1:port answers PING with +PONG within a short while. */
static int fr_ping(int port)
{
	struct sockaddr_in sa;
	struct pollfd p;
	char buf[16];
	ssize_t n;
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok = 0;

	if (fd < 0)
		return 0;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((uint16_t)port);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && write(fd, "PING\r\n", 6) == 6) {
		p.fd = fd;
		p.events = POLLIN;
		if (poll(&p, 1, 500) == 1) {
			n = read(fd, buf, sizeof(buf) - 1);
			ok = n >= 7 && memcmp(buf, "+PONG\r\n", 7) == 0;
		}
	}
	close(fd);
	return ok;
}

/* One start on one port: 0, or -1 when the server exited (port taken) or
 * did not answer in time. */
static int fr_start_on(struct ferry_redis *r, int port)
{
	char portstr[16];
	uint64_t deadline = fr_mono_ms() + FR_START_MS;
	pid_t pid;

	snprintf(portstr, sizeof(portstr), "%d", port);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
		}
		execlp("redis-server", "redis-server", "--port", portstr, "--bind", "127.0.0.1",
		       "--save", "", "--appendonly", "no", "--daemonize", "no", (char *)NULL);
		_exit(127);
	}
	fr_track(pid, 0);
	while (fr_mono_ms() < deadline) {
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			fr_track(0, pid);
			return -1;
		}
		if (fr_ping(port)) {
			r->pid = pid;
			r->port = port;
			return 0;
		}
		usleep(10000);
	}
	fr_reap(pid);
	fr_track(0, pid);
	return -1;
}

int ferry_redis_start(struct ferry_redis *r, int port)
{
	int tries;

	if (!fr_atexit_set) {
		atexit(fr_kill_all);
		fr_atexit_set = 1;
	}
	r->pid = -1;
	for (tries = 0; tries < (port == 0 ? FR_PORT_TRIES : 1); tries++) {
		int p = port != 0 ? port : ferry_redis_free_port();

		if (p > 0 && fr_start_on(r, p) == 0)
			return 0;
	}
	fprintf(stderr, "ferry_redis: cannot start redis-server (port %d)\n", port);
	return -1;
}

void ferry_redis_stop(struct ferry_redis *r)
{
	if (r->pid > 0) {
		fr_reap(r->pid);
		fr_track(0, r->pid);
	}
	r->pid = -1;
}
