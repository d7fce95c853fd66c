// A short-lived process for the soak (`scripts/soak`): lives ~20 ms. One in
// four is multi-threaded and its leader exits first (pthread_exit), so the
// process runs on as a zombie leader with a live thread — the trap where
// /proc/PID/maps reads empty.
//
// `churnling BURST [ONE_IN]`: in addition, about one in ONE_IN [default 100]
// forks BURST children at once that live ~1 ms each: a storm of fork events
// on one CPU, so that a one-page ring with a wake-up per request loses
// records.
#include <pthread.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void nap(long ms)
{
	struct timespec t = { 0, ms * 1000000L };
	nanosleep(&t, NULL);
}

static void *worker(void *arg)
{
	(void)arg;
	nap(20);
	exit(0);
	return NULL;
}

static void burst(int n)
{
	for (int i = 0; i < n; i++) {
		pid_t c = fork();
		if (c == 0) {
			nap(1);
			_exit(0);
		}
	}
	while (wait(NULL) > 0)
		;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 0;
	int one_in = argc > 2 ? atoi(argv[2]) : 100;
	if (n > 0 && one_in > 0 && getpid() % one_in == 1)
		burst(n);
	if (getpid() % 4 == 0) {
		pthread_t t;
		nap(2); // give the agent a moment to see the process whole
		if (pthread_create(&t, NULL, worker, NULL) == 0)
			pthread_exit(NULL);
	}
	nap(20);
	return 0;
}
