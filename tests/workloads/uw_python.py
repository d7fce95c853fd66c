# The Python workload of the unwinding tests: pure-Python work (json.dumps
# and re.match in a loop) for about SECONDS of CPU (argv[1], default 1.5),
# run by Debian's /usr/bin/python3, which has no frame pointers.
import json
import re
import sys
import time

PATTERN = re.compile(r"^(\w+)-(\d+)\.(\w+)@([a-z]+)\.example$")


def encode(i):
    return json.dumps({"id": i, "name": "item-%d" % i, "tags": ["a", "b", str(i)],
                       "nested": {"x": i * 2, "y": [i, i + 1, i + 2]}})


def match(i):
    return PATTERN.match("user-%d.mail@host.example" % i) is not None


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.5
    end = time.process_time() + seconds
    n = 0
    while time.process_time() < end:
        for i in range(200):
            n += len(encode(i)) + match(i)
    print("done", n)


main()
