// `dlchurn LIB N` (the kernel matrix's guest, scripts/kernels): N rounds of
// dlopen(LIB), a fork whose child calls into LIB and exits (a sync of a
// process with LIB mapped, then its exit), and dlclose (LIB unmapped).
// Built dynamically: dlopen needs the loader and libc in the guest.
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: dlchurn LIB N\n");
		return 2;
	}
	int n = atoi(argv[2]);
	for (int i = 0; i < n; i++) {
		void *h = dlopen(argv[1], RTLD_NOW);
		if (!h) {
			fprintf(stderr, "dlchurn: dlopen %s: %s\n", argv[1], dlerror());
			return 1;
		}
		int (*work)(int) = (int (*)(int))dlsym(h, "plugin_work");
		pid_t p = fork();
		if (p == 0)
			_exit(work && work(i) == i * 3 + 1 ? 0 : 1);
		int st = 0;
		if (p < 0 || waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st)) {
			fprintf(stderr, "dlchurn: round %d: child failed\n", i);
			return 1;
		}
		dlclose(h);
	}
	printf("dlchurn: %d rounds\n", n);
	return 0;
}
