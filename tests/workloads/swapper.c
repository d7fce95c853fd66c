// An attacker for tests/hostile_files.rs: maps a library (argv[1]), then,
// told "go" on stdin, maps another file (argv[2]) over the library's code
// at the same address, puts a FIFO at the library's name and runs the
// code (now the other file's) for argv[3] seconds. A tracker that read
// /proc/PID/maps before the swap still names the first file there.
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	void *h = dlopen(argv[1], RTLD_NOW);
	if (!h)
		return 3;
	long (*hot)(double) = (long (*)(double))dlsym(h, "hostile_hot");
	if (!hot)
		return 4;
	FILE *maps = fopen("/proc/self/maps", "r");
	char line[4096];
	unsigned long start = 0, end = 0, off = 0;
	while (maps && fgets(line, sizeof line, maps)) {
		unsigned long s, e, o;
		char perms[5];
		if (sscanf(line, "%lx-%lx %4s %lx", &s, &e, perms, &o) == 4 &&
		    (unsigned long)hot >= s && (unsigned long)hot < e) {
			start = s, end = e, off = o;
			break;
		}
	}
	if (!start)
		return 5;
	printf("mapped\n");
	fflush(stdout);
	if (getchar() == EOF)
		return 0;
	int fd = open(argv[2], O_RDONLY);
	if (fd < 0 || mmap((void *)start, end - start, PROT_READ | PROT_EXEC,
			   MAP_PRIVATE | MAP_FIXED, fd, off) == MAP_FAILED)
		return 6;
	if (unlink(argv[1]) || mkfifo(argv[1], 0666))
		return 7;
	printf("swapped\n");
	fflush(stdout);
	hot(atof(argv[3]));
	return 0;
}
