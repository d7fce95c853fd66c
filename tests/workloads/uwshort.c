// The short-lived workload of the unwinding tests, built with -O2
// -fomit-frame-pointer: `uwshort N MS` starts N children one after
// another, each a fresh exec of this file (`uwshort child MS`) that burns
// 2 ms of CPU in short_warm, then MS milliseconds in short_hot, and exits
// at once. ld.so maps libc after the exec the agent syncs at, and no event
// tells it: a sample soon after (in ld.so or short_warm) finds libc
// unknown and asks for a sync. short_warm gives that sync the time to
// land, so a walk from short_hot meets libc in the trie and what the
// test counts is the unwinding, not the trie's latency (tests/sampling.rs
// bounds that).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

volatile unsigned long short_sink;

static double cpu_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* the work of both phases, inlined into each so that every sample's leaf
 * frame is the phase it was taken in */
static inline __attribute__((always_inline)) void burn(double seconds, unsigned long s)
{
	double end = cpu_now() + seconds;
	while (cpu_now() < end)
		for (unsigned long i = 0; i < 20000; i++)
			s = s * 0x5851f42d4c957f2dul + i;
	short_sink = s;
}

__attribute__((noinline)) void short_warm(double seconds)
{
	burn(seconds, 7);
}

__attribute__((noinline)) void short_hot(double seconds)
{
	burn(seconds, 11);
}

int main(int argc, char **argv)
{
	if (argc > 2 && strcmp(argv[1], "child") == 0) {
		short_warm(0.002);
		short_hot(atof(argv[2]) / 1000.0);
		return 0;
	}
	int n = argc > 1 ? atoi(argv[1]) : 100;
	const char *ms = argc > 2 ? argv[2] : "5";
	// the children run this very file under its own name (so their comm
	// is the parent's)
	char self[4096];
	ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
	if (len <= 0)
		return 1;
	self[len] = 0;
	for (int i = 0; i < n; i++) {
		pid_t p = fork();
		if (p < 0)
			return 1;
		if (p == 0) {
			execl(self, "uwshort", "child", ms, (char *)NULL);
			_exit(127);
		}
		int st;
		if (waitpid(p, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			return 1;
	}
	printf("done %d\n", n);
	return 0;
}
