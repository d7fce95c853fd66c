// The sampled workload: burns CPU in main_hot (this binary), lib_hot
// (libsampled.so) and, in many children that live ~20 ms each, child_hot.
// Prints its own CPU split, measured with thread and children CPU clocks:
//   cpu main=<s> lib=<s> child=<s>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void lib_hot(unsigned long n);
volatile unsigned long main_sink;

static double cpu_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

__attribute__((noinline)) void main_hot(unsigned long n)
{
	for (unsigned long i = 0; i < n; i++)
		main_sink ^= i * 0x9e3779b97f4a7c15ul;
}

__attribute__((noinline)) void child_hot(double seconds)
{
	double end = cpu_now() + seconds;
	while (cpu_now() < end)
		for (int i = 0; i < 10000; i++)
			main_sink += i;
}

static void burn(void (*f)(unsigned long), double seconds)
{
	double end = cpu_now() + seconds;
	while (cpu_now() < end)
		f(200000);
}

int main(int argc, char **argv)
{
	double main_s = argc > 1 ? atof(argv[1]) : 1.0;
	double lib_s = argc > 2 ? atof(argv[2]) : 1.0;
	int children = argc > 3 ? atoi(argv[3]) : 50;
	double t0 = cpu_now();
	burn(main_hot, main_s);
	double t1 = cpu_now();
	burn(lib_hot, lib_s);
	double t2 = cpu_now();
	for (int i = 0; i < children; i++) {
		pid_t p = fork();
		if (p == 0) {
			child_hot(0.02);
			_exit(0);
		}
		waitpid(p, NULL, 0);
	}
	struct rusage ru;
	getrusage(RUSAGE_CHILDREN, &ru);
	double child = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
	printf("cpu main=%.4f lib=%.4f child=%.4f\n", t1 - t0, t2 - t1, child);
	return 0;
}
