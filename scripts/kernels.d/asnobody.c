// `asnobody CMD ARGS...` (the kernel matrix's guest): runs CMD as uid and
// gid 65534 with no supplementary groups, as `setpriv --reuid=65534
// --regid=65534 --clear-groups` does on the host (busybox has no setpriv).
#include <grp.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: asnobody CMD ARGS...\n");
		return 2;
	}
	if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0) {
		perror("asnobody: dropping to uid 65534");
		return 126;
	}
	execv(argv[1], argv + 1);
	perror("asnobody: exec");
	return 127;
}
