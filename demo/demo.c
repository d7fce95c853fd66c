/* The demo workload of `make run`: a few recognisable functions with
 * frame pointers, and a child process that lives a few milliseconds.
 * It does a fixed amount of work (about a second of CPU), then exits. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile uint64_t sink;

/* Each hot function ends by calling this, so none is a leaf: gcc keeps
 * the frame pointer of a leaf function only when it must, and a leaf
 * without one hides its caller from a frame-pointer walk. */
__attribute__((noinline)) static void consume(uint64_t v)
{
	sink += v;
}

/* FNV-1a over a block, many times. */
__attribute__((noinline)) static uint64_t hash_block(const unsigned char *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	consume(h);
	return h;
}

/* Parse "key=value;" records out of a buffer. */
__attribute__((noinline)) static uint64_t parse_records(const char *s, size_t n)
{
	uint64_t sum = 0, v = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c >= '0' && c <= '9')
			v = v * 10 + (uint64_t)(c - '0');
		else if (c == ';') {
			sum += v;
			v = 0;
		}
	}
	consume(sum);
	return sum;
}

/* Sort a shuffled array of keys (a shell sort: the stacks stay ours,
 * libc's qsort has no frame pointers). */
__attribute__((noinline)) static void sort_keys(uint32_t *k, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1664525u + 1013904223u;
		k[i] = seed;
	}
	for (size_t gap = n / 2; gap > 0; gap /= 2)
		for (size_t i = gap; i < n; i++) {
			uint32_t v = k[i];
			size_t j = i;
			for (; j >= gap && k[j - gap] > v; j -= gap)
				k[j] = k[j - gap];
			k[j] = v;
		}
	consume(k[0]);
}

/* The child's few milliseconds of work. */
__attribute__((noinline)) static void child_checksum(const unsigned char *p, size_t n)
{
	for (int r = 0; r < 200; r++)
		sink += hash_block(p, n);
}

__attribute__((noinline)) static void serve_requests(int rounds)
{
	static unsigned char block[64 << 10];
	static char text[96 << 10];
	static uint32_t keys[1 << 10];
	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = (i % 7 == 6) ? ';' : (char)('0' + i % 10);
	memset(block, 0x5a, sizeof(block));
	for (int r = 0; r < rounds; r++) {
		sink += hash_block(block, sizeof(block));
		sink += parse_records(text, sizeof(text));
		sort_keys(keys, sizeof(keys) / sizeof(keys[0]), (uint32_t)r);
		if (r == rounds / 2) {
			pid_t pid = fork();
			if (pid == 0) {
				prctl(PR_SET_NAME, "demo-child");
				child_checksum(block, sizeof(block));
				_exit(0);
			}
			if (pid > 0)
				waitpid(pid, NULL, 0);
		}
	}
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 4000;
	serve_requests(rounds);
	printf("demo: %d rounds done\n", rounds);
	return 0;
}
