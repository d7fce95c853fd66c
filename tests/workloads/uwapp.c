// The C workload of the unwinding tests, built with -O2
// -fomit-frame-pointer with its library (uwlib.c): recognisable hot
// functions that call each other across the library boundary through the
// PLT, in both directions. For SECONDS of CPU (argv[1], default 1.5):
//   main -> app_outer -> lib_middle (libuw.so, PLT) -> lib_leaf (PLT
//   inside the library) and lib_middle -> app_callback (back into the
//   executable, PLT: it is linked with -rdynamic);
//   main -> app_tiny_loop -> lib_tiny (PLT, millions of tiny calls, so
//   samples land in the PLT stub itself).
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

unsigned long lib_middle(unsigned long n);
unsigned long lib_tiny(unsigned long x);
volatile unsigned long app_sink;

static double cpu_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

__attribute__((noinline)) unsigned long app_callback(unsigned long n)
{
	unsigned long s = 0;
	for (unsigned long i = 0; i < n; i++)
		s += (i * 0x9e3779b97f4a7c15ul) >> 7;
	app_sink = s;
	return s;
}

__attribute__((noinline)) unsigned long app_outer(unsigned long n)
{
	unsigned long s = 0;
	for (unsigned long i = 0; i < n; i++)
		s ^= i * 2654435761u;
	return s + lib_middle(n);
}

__attribute__((noinline)) unsigned long app_tiny_loop(unsigned long n)
{
	unsigned long s = 0;
	for (unsigned long i = 0; i < n; i++)
		s = lib_tiny(s + i);
	return s;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 1.5;
	double end = cpu_now() + seconds;
	unsigned long s = 0;
	while (cpu_now() < end) {
		s += app_outer(100000);
		s += app_tiny_loop(100000);
	}
	printf("done %lu\n", s);
	return 0;
}
