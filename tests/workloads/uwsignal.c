// The signal workload of the unwinding tests, built with -O2
// -fomit-frame-pointer: an ITIMER_PROF timer sends SIGPROF every 4 ms of
// CPU time; the handler (handler_hot) burns most of the CPU, so samples
// land in it with the kernel's signal frame (__restore_rt) beneath it and
// main_spin, interrupted anywhere, beneath that. Runs SECONDS of CPU
// (argv[1], default 1.5).
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

volatile unsigned long sig_sink;
volatile unsigned long handled;

static double thread_cpu(void)
{
	struct timespec t;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

__attribute__((noinline)) void handler_hot(int sig)
{
	unsigned long s = (unsigned long)sig;
	// 2.5 ms of CPU, most of the 4 ms period, measured in CPU time so the
	// split holds however busy the machine is
	double end = thread_cpu() + 0.0025;
	do
		for (unsigned long i = 0; i < 50000; i++)
			s = (s + i) * 0x9e3779b97f4a7c15ul;
	while (thread_cpu() < end);
	sig_sink = s;
	handled++;
}

__attribute__((noinline)) unsigned long main_spin(unsigned long n)
{
	unsigned long s = 3;
	for (unsigned long i = 0; i < n; i++)
		s ^= (s << 5) + i;
	return s;
}

static double cpu_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 1.5;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler_hot;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	if (sigaction(SIGPROF, &sa, NULL) != 0)
		return 1;
	struct itimerval it = {{0, 4000}, {0, 4000}};
	if (setitimer(ITIMER_PROF, &it, NULL) != 0)
		return 1;
	double end = cpu_now() + seconds;
	unsigned long s = 0;
	while (cpu_now() < end)
		s += main_spin(100000);
	struct itimerval off = {{0, 0}, {0, 0}};
	setitimer(ITIMER_PROF, &off, NULL);
	printf("done %lu handled %lu\n", s, handled);
	return 0;
}
