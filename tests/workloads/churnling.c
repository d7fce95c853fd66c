// A short-lived process for the soak (`scripts/soak`): lives ~20 ms. One in
// four is multi-threaded and its leader exits first (pthread_exit), so the
// process runs on as a zombie leader with a live thread — the trap where
// /proc/PID/maps reads empty.
#include <pthread.h>
#include <stdlib.h>
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

int main(void)
{
	if (getpid() % 4 == 0) {
		pthread_t t;
		nap(2); // give the agent a moment to see the process whole
		if (pthread_create(&t, NULL, worker, NULL) == 0)
			pthread_exit(NULL);
	}
	nap(20);
	return 0;
}
