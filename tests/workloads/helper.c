// A process the agent tests steer through stdin, one command a line:
//   dlopen PATH | dlclose | exec PATH | zombie | exit
// Each command answers "ok" on stdout once done.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *handle;

static void *wait_then_exit(void *arg)
{
	char line[256];
	(void)arg;
	// the leader is gone: this thread keeps the process alive until EOF
	// or a line arrives on stdin
	if (!fgets(line, sizeof(line), stdin)) {
	}
	exit(0);
	return NULL;
}

int main(void)
{
	char line[4096];
	setvbuf(stdout, NULL, _IONBF, 0);
	printf("ready\n");
	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\n")] = 0;
		if (!strncmp(line, "dlopen ", 7)) {
			handle = dlopen(line + 7, RTLD_NOW);
			printf(handle ? "ok\n" : "fail %s\n", dlerror());
		} else if (!strcmp(line, "dlclose")) {
			dlclose(handle);
			handle = NULL;
			printf("ok\n");
		} else if (!strncmp(line, "exec ", 5)) {
			char *argv[] = { line + 5, "1000", NULL };
			printf("ok\n");
			execv(line + 5, argv);
			printf("fail exec\n");
		} else if (!strcmp(line, "zombie")) {
			pthread_t t;
			pthread_create(&t, NULL, wait_then_exit, NULL);
			printf("ok\n");
			pthread_exit(NULL);
		} else if (!strcmp(line, "exit")) {
			return 0;
		}
	}
	return 0;
}
