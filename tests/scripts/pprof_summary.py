#!/usr/bin/env python3
"""An independent pprof reader (Python's gzip plus a protobuf wire-format
decoder written from the spec): prints the total of the first sample value
and, per function name, the samples whose leaf location is that function,
as `name<TAB>count` lines. Used by the tests to check pidmap's encoder.
With --stacks, prints every sample's stack instead, outermost frame first,
each frame as `function@file` (the basename of its mapping's file):
`f1@a;f2@b<TAB>count`."""
import gzip, sys


def varint(b, i):
    v = s = 0
    while True:
        c = b[i]; i += 1
        v |= (c & 0x7F) << s; s += 7
        if c < 0x80:
            return v, i


def fields(b):
    i, out = 0, []
    while i < len(b):
        k, i = varint(b, i)
        f, w = k >> 3, k & 7
        if w == 0:
            v, i = varint(b, i); out.append((f, v, None))
        elif w == 2:
            n, i = varint(b, i); out.append((f, None, b[i:i + n])); i += n
        elif w == 1:
            i += 8
        elif w == 5:
            i += 4
        else:
            raise ValueError("wire type %d" % w)
    return out


def packed(v, raw):
    if raw is None:
        return [v]
    out, i = [], 0
    while i < len(raw):
        x, i = varint(raw, i); out.append(x)
    return out


data = open(sys.argv[1], "rb").read()
if data[:2] == b"\x1f\x8b":
    data = gzip.decompress(data)
top = fields(data)
strings = [raw.decode() for f, _, raw in top if f == 6]
funcs, locs, maps, frames = {}, {}, {}, {}
for f, _, raw in top:
    if f == 5:
        d = {k: v for k, v, _ in fields(raw)}
        funcs[d.get(1, 0)] = strings[d.get(2, 0)]
    elif f == 3:
        d = {k: v for k, v, _ in fields(raw)}
        maps[d.get(1, 0)] = strings[d.get(5, 0)].rsplit("/", 1)[-1]
for f, _, raw in top:
    if f == 4:
        lid, fn, mid, names = 0, None, 0, []
        for k, v, r in fields(raw):
            if k == 1:
                lid = v
            elif k == 2:
                mid = v
            elif k == 4:
                d = {kk: vv for kk, vv, _ in fields(r)}
                names.append(funcs.get(d.get(1), "?"))
                if fn is None:
                    fn = d.get(1)
        locs[lid] = funcs.get(fn, "?")
        # the last line is the caller the others were inlined into
        frames[lid] = [n + "@" + maps.get(mid, "?") for n in reversed(names or ["?"])]
total, leaf, stacks = 0, {}, {}
mappings = sum(1 for f, _, _ in top if f == 3)
for f, _, raw in top:
    if f == 2:
        ls, vs = [], []
        for k, v, r in fields(raw):
            if k == 1:
                ls += packed(v, r)
            elif k == 2:
                vs += packed(v, r)
        total += vs[0]
        st = ";".join(fr for l in reversed(ls) for fr in frames.get(l, ["?"]))
        stacks[st] = stacks.get(st, 0) + vs[0]
        name = locs[ls[0]] if ls else "?"
        leaf[name] = leaf.get(name, 0) + vs[0]
if sys.argv[2:] == ["--stacks"]:
    for st, c in sorted(stacks.items()):
        print("%s\t%d" % (st, c))
    sys.exit(0)
print("total\t%d" % total)
print("mappings\t%d" % mappings)
for n, c in sorted(leaf.items()):
    print("%s\t%d" % (n, c))
