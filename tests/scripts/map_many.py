"""Attacker and huge-process workload: maps FILE with PROT_EXEC N times
(7 pages each, private, offset 0, so neighbours never merge and each
mapping covers several prefix blocks), then forks CHILDREN processes that
inherit every mapping. Prints each child's pid, then "ready"; all exit at
EOF on stdin.

Usage: map_many.py FILE N CHILDREN"""
import ctypes
import os
import sys

path, n, children = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                      ctypes.c_int, ctypes.c_int, ctypes.c_long]
PROT_READ_EXEC, MAP_PRIVATE, FAILED = 5, 2, ctypes.c_void_p(-1).value
fd = os.open(path, os.O_RDONLY)
for i in range(n):
    r = libc.mmap(None, 7 * 4096, PROT_READ_EXEC, MAP_PRIVATE, fd, 0)
    if r is None or r == FAILED:
        sys.exit("mmap %d failed: errno %d" % (i, ctypes.get_errno()))
pids = []
for _ in range(children):
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        sys.stdin.read()
        os._exit(0)
    pids.append(pid)
for pid in pids:
    print(pid)
print("ready", flush=True)
sys.stdin.read()
for pid in pids:
    os.waitpid(pid, 0)
