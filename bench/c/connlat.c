/* connlat: time connect() to a list of targets, from inside a network
 * namespace and a cgroup2 directory.
 *
 *   connlat NETNS_PATH CGROUP_DIR|- TARGETS_FILE WARMUP CPU|-1
 *
 * Enters the netns (setns), moves itself into CGROUP_DIR (before any socket
 * exists, so the cgroup's sock_addr programs apply), pins itself to CPU,
 * then for every "a.b.c.d port" line of TARGETS_FILE: socket(), time
 * connect() with CLOCK_MONOTONIC, close().  The first WARMUP targets are not
 * reported.  Output, one line per reported connect: "<ns> <errno>" (errno 0
 * = connected).  Only connect() is inside the timed region.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: %s NETNS_PATH CGROUP_DIR|- TARGETS_FILE WARMUP CPU|-1\n", argv[0]);
		return 2;
	}
	int nsfd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0) {
		perror("setns");
		return 1;
	}
	close(nsfd);
	if (strcmp(argv[2], "-") != 0) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/cgroup.procs", argv[2]);
		FILE *f = fopen(path, "w");
		if (!f || fprintf(f, "%d\n", getpid()) < 0 || fclose(f) != 0) {
			perror("joining cgroup");
			return 1;
		}
	}
	int cpu = atoi(argv[5]);
	if (cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		sched_setaffinity(0, sizeof(set), &set);
	}
	long warmup = atol(argv[4]);
	FILE *tf = fopen(argv[3], "r");
	if (!tf) {
		perror("targets");
		return 1;
	}
	size_t cap = 1024, n = 0;
	struct sockaddr_in *dst = malloc(cap * sizeof(*dst));
	char ip[64];
	int port;
	while (fscanf(tf, "%63s %d", ip, &port) == 2) {
		if (n == cap)
			dst = realloc(dst, (cap *= 2) * sizeof(*dst));
		memset(&dst[n], 0, sizeof(dst[n]));
		dst[n].sin_family = AF_INET;
		dst[n].sin_port = htons((unsigned short)port);
		if (inet_pton(AF_INET, ip, &dst[n].sin_addr) != 1) {
			fprintf(stderr, "bad address %s\n", ip);
			return 1;
		}
		n++;
	}
	fclose(tf);
	long long *lat = calloc(n ? n : 1, sizeof(*lat));
	int *err = calloc(n ? n : 1, sizeof(*err));
	struct timeval tmo = {.tv_sec = 2, .tv_usec = 0};
	for (size_t i = 0; i < n; i++) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		if (s < 0) {
			perror("socket");
			return 1;
		}
		setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tmo, sizeof(tmo));
		long long t0 = now_ns();
		int r = connect(s, (struct sockaddr *)&dst[i], sizeof(dst[i]));
		long long t1 = now_ns();
		err[i] = r == 0 ? 0 : errno;
		lat[i] = t1 - t0;
		close(s);
	}
	for (size_t i = (size_t)warmup < n ? (size_t)warmup : n; i < n; i++)
		printf("%lld %d\n", lat[i], err[i]);
	return 0;
}
