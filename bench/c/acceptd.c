/* acceptd: the backends' TCP listener, counting who reached which address.
 *
 *   acceptd NETNS_PATH PORT CPU|-1
 *
 * Enters the netns, listens on 0.0.0.0:PORT (every backend IP is local in
 * that netns), accepts and closes connections, counting them per (client
 * source address, local destination address).  Prints "ready" once
 * listening.  On SIGTERM/SIGINT it accepts what is still queued, prints one
 * "src dst count" line per pair, then "end", and exits.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_PAIRS (1 << 20)
struct pair { unsigned src, dst, count; };
static struct pair *table;  /* open addressing on (src, dst) */
static size_t used;
static volatile sig_atomic_t stop;

static void on_signal(int sig) { (void)sig; stop = 1; }

static void count(unsigned src, unsigned dst)
{
	size_t h = ((size_t)src * 2654435761u ^ (size_t)dst * 40503u) & (MAX_PAIRS - 1);
	while (table[h].count && (table[h].src != src || table[h].dst != dst))
		h = (h + 1) & (MAX_PAIRS - 1);
	if (!table[h].count) {
		if (++used >= MAX_PAIRS - 1) return;
		table[h].src = src;
		table[h].dst = dst;
	}
	table[h].count++;
}

static void accept_one(int ls)
{
	struct sockaddr_in peer, me;
	socklen_t pl = sizeof(peer), ml = sizeof(me);
	int c = accept(ls, (struct sockaddr *)&peer, &pl);
	if (c < 0)
		return;
	if (getsockname(c, (struct sockaddr *)&me, &ml) == 0)
		count(peer.sin_addr.s_addr, me.sin_addr.s_addr);
	close(c);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s NETNS_PATH PORT CPU|-1\n", argv[0]);
		return 2;
	}
	int nsfd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0) {
		perror("setns");
		return 1;
	}
	close(nsfd);
	int cpu = atoi(argv[3]);
	if (cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		sched_setaffinity(0, sizeof(set), &set);
	}
	table = calloc(MAX_PAIRS, sizeof(*table));
	struct sigaction sa = {0};
	sa.sa_handler = on_signal;  /* no SA_RESTART: accept() returns EINTR */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
	if (bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 65535) < 0) {
		perror("listen");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	while (!stop)
		accept_one(ls);
	fcntl(ls, F_SETFL, O_NONBLOCK);
	for (;;) {
		struct sockaddr_in peer;
		socklen_t pl = sizeof(peer);
		int c = accept(ls, (struct sockaddr *)&peer, &pl);
		if (c < 0)
			break;
		struct sockaddr_in me;
		socklen_t ml = sizeof(me);
		if (getsockname(c, (struct sockaddr *)&me, &ml) == 0)
			count(peer.sin_addr.s_addr, me.sin_addr.s_addr);
		close(c);
	}
	char s[INET_ADDRSTRLEN], d[INET_ADDRSTRLEN];
	for (size_t i = 0; i < MAX_PAIRS; i++) {
		if (!table[i].count)
			continue;
		inet_ntop(AF_INET, &table[i].src, s, sizeof(s));
		inet_ntop(AF_INET, &table[i].dst, d, sizeof(d));
		printf("%s %s %u\n", s, d, table[i].count);
	}
	printf("end\n");
	return 0;
}
