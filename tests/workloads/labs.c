/* The regression lab's workload: three hot functions doing about
 * 37/37/25 % of the work, each round the same fixed amount of work (no
 * clocks, no sleeps). Build knobs:
 *   -DSLOW_PCT=X  hot_a does X % more work (exactly: X % more iterations
 *                 of the same loop), the "new build" of a regression;
 *   -DSHARED=1    the three do their work in one shared helper (the usual
 *                 shape: every sample's leaf is the helper, so only the
 *                 callers' total shares tell them apart).
 * Usage: labs ROUNDS */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef SLOW_PCT
#define SLOW_PCT 0
#endif
#ifndef SHARED
#define SHARED 0
#endif

static volatile uint64_t sink;

/* Called at the end of each worker so none is a leaf: gcc omits a leaf's
 * frame pointer, which would hide its caller from the unwinder. */
__attribute__((noinline)) static void consume(uint64_t v)
{
	sink += v;
}

#define WORK(n)                                                              \
	do {                                                                 \
		uint64_t x_ = sink | 1;                                      \
		for (uint64_t i_ = 0; i_ < (n); i_++)                        \
			x_ = x_ * 6364136223846793005ULL + 1442695040888963407ULL; \
		consume(x_);                                                 \
	} while (0)

static uint64_t slower(uint64_t n)
{
	return (uint64_t)((double)n * (100.0 + (double)(SLOW_PCT)) / 100.0 + 0.5);
}

#if SHARED
__attribute__((noinline)) static void helper(uint64_t n)
{
	WORK(n);
}
__attribute__((noinline)) static void hot_a(uint64_t n)
{
	helper(slower(n));
	consume(1);
}
__attribute__((noinline)) static void hot_b(uint64_t n)
{
	helper(n);
	consume(2);
}
__attribute__((noinline)) static void hot_c(uint64_t n)
{
	helper(n);
	consume(3);
}
#else
__attribute__((noinline)) static void hot_a(uint64_t n)
{
	WORK(slower(n));
}
__attribute__((noinline)) static void hot_b(uint64_t n)
{
	WORK(n);
}
__attribute__((noinline)) static void hot_c(uint64_t n)
{
	WORK(n);
}
#endif

int main(int argc, char **argv)
{
	long rounds = argc > 1 ? atol(argv[1]) : 1000;
	for (long r = 0; r < rounds; r++) {
		hot_a(37000);
		hot_b(37000);
		hot_c(25000);
	}
	printf("labs: %ld rounds\n", rounds);
	return 0;
}
