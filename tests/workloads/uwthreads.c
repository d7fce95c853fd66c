// The multi-threaded workload of the unwinding tests, built with -O2
// -fomit-frame-pointer: THREADS threads (argv[2], default 4) each burn
// SECONDS of CPU (argv[1], default 0.8) in thread_outer -> thread_hot,
// while the main thread waits in pthread_join. Every thread's stack
// starts at clone3 -> start_thread.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double seconds;
volatile unsigned long thread_sink;

static double thread_cpu(void)
{
	struct timespec t;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

__attribute__((noinline)) unsigned long thread_hot(unsigned long n)
{
	unsigned long s = 7;
	for (unsigned long i = 0; i < n; i++)
		s = (s ^ i) * 0x100000001b3ul;
	thread_sink = s;
	return s;
}

__attribute__((noinline)) void *thread_outer(void *arg)
{
	double end = thread_cpu() + seconds;
	unsigned long s = (unsigned long)arg;
	while (thread_cpu() < end)
		s += thread_hot(200000);
	return (void *)s;
}

int main(int argc, char **argv)
{
	seconds = argc > 1 ? atof(argv[1]) : 0.8;
	int n = argc > 2 ? atoi(argv[2]) : 4;
	pthread_t t[64];
	if (n > 64)
		n = 64;
	for (int i = 0; i < n; i++)
		if (pthread_create(&t[i], NULL, thread_outer, (void *)(long)i) != 0)
			return 1;
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	printf("done\n");
	return 0;
}
