// `fifo_mapper LIB [spin]` (the kernel matrix's guest, run as uid 65534
// through asnobody): maps LIB executable, deletes it and puts a FIFO at its
// name, so /proc/PID/maps says `LIB (deleted)` and whoever opens that path
// for reading blocks. With `spin`, LIB is first written with one
// instruction, `jmp .`, which a thread then runs for ever: a profile
// samples code of that file. Prints "ready", then waits to be killed.
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static void *spin(void *code)
{
	((void (*)(void))code)();
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: fifo_mapper LIB [spin]\n");
		return 2;
	}
	int spinning = argc > 2 && !strcmp(argv[2], "spin");
	if (spinning) {
		static unsigned char page[4096] = { 0xeb, 0xfe }; // jmp .
		int w = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
		if (w < 0 || write(w, page, sizeof(page)) != sizeof(page) || close(w) != 0) {
			perror("fifo_mapper: writing the code");
			return 1;
		}
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
	pthread_t t;
	if (spinning && pthread_create(&t, NULL, spin, p) != 0) {
		perror("fifo_mapper: pthread_create");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
