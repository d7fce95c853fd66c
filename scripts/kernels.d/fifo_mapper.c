// `fifo_mapper LIB` (the kernel matrix's guest, run as uid 65534 through
// asnobody): maps LIB executable, deletes it and puts a FIFO at its name,
// so /proc/PID/maps says `LIB (deleted)` and whoever opens that path for
// reading blocks. Prints "ready", then waits to be killed.
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: fifo_mapper LIB\n");
		return 2;
	}
	int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		perror("fifo_mapper: open");
		return 1;
	}
	void *p = mmap(NULL, st.st_size, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED) {
		perror("fifo_mapper: mmap");
		return 1;
	}
	close(fd);
	if (unlink(argv[1]) != 0 || mkfifo(argv[1], 0666) != 0) {
		perror("fifo_mapper: unlink, mkfifo");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
