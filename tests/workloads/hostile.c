// A shared object an attacker maps and runs (tests/hostile_files.rs): it
// burns CPU in its own code, in a static function (only in .symtab, so
// only a followed debug link can name it) called by an exported one.
#include <time.h>

volatile unsigned long hostile_sink;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

__attribute__((noipa)) static void hostile_spin(unsigned long n)
{
	for (unsigned long i = 0; i < n; i++)
		hostile_sink += i * 2654435761u;
}

// Spins for `secs` seconds of wall time.
__attribute__((noipa)) long hostile_hot(double secs)
{
	double end = now() + secs;
	long rounds = 0;
	while (now() < end) {
		hostile_spin(100000);
		rounds++;
	}
	return rounds;
}
