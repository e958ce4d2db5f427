#!/usr/bin/env python3
"""Atomic read-modify-writes and calls per message in a callgrind profile.

Usage: callgrind-atomics.py OUT_FILE N

OUT_FILE must come from `valgrind --tool=callgrind --dump-instr=yes
--dump-line=no`. Every executed instruction's count is matched against
`objdump -d` of its object: instructions with a `lock` prefix or an `xchg`
with a memory operand (implicitly locked) are the atomic RMWs, which cost
tens of cycles each on x86 however few instructions they are, so an
instruction count alone hides them. Prints, per message (count / N), the
RMWs by the function that executes them, and the calls to the allocator and
the clock.
"""
import collections
import re
import subprocess
import sys

out_file, n = sys.argv[1], float(sys.argv[2])
names = {}


def name(kind, text):
    m = re.match(r"\((\d+)\)(?: (.*))?", text)
    if not m:
        return text
    key = (kind, m.group(1))
    if m.group(2) is not None:
        names[key] = m.group(2)
    return names.get(key, "?")


executed = collections.defaultdict(lambda: collections.Counter())  # obj -> addr -> count
calls = collections.Counter()
obj = cobj = current = None
own = collections.Counter()  # function -> self Ir (inlined code included)
inclusive = collections.Counter()  # function -> self + callees
pos = 0
pending_call = None
for raw in open(out_file):
    line = raw.rstrip("\n")
    if not line or line.startswith("#"):
        continue
    head, _, rest = line.partition("=")
    if head in ("ob", "cob", "fl", "fi", "fe", "fn", "cfi", "cfl", "cfn") and rest:
        kind = {"cob": "ob", "cfi": "fl", "cfl": "fl", "cfn": "fn", "fi": "fl", "fe": "fl"}.get(head, head)
        value = name(kind, rest)
        if head == "ob":
            obj = value
        elif head == "cob":
            cobj = value
        elif head == "cfn":
            callee = value
        elif head == "fn":
            current = value
        continue
    if head == "calls":
        count = int(rest.split()[0])
        pending_call = count
        continue
    token = line.split()[0]
    if token[0] in "0123456789+-*" and (token.startswith("0x") or token[0] in "+-*"):
        if token.startswith("0x"):
            pos = int(token, 16)
        elif token[0] == "+":
            pos += int(token[1:], 16) if token[1:].startswith("0x") else int(token[1:])
        elif token[0] == "-":
            pos -= int(token[1:], 16) if token[1:].startswith("0x") else int(token[1:])
        cost = int(line.split()[1]) if len(line.split()) > 1 else 0
        if pending_call is not None:
            calls[callee] += pending_call
            if callee != current:
                inclusive[current] += cost
            pending_call = None
            cobj = None
        else:
            executed[obj][pos] += cost
            own[current] += cost
            inclusive[current] += cost

print(f"  functions by inclusive Ir per message (self in brackets; inlined code counts as its caller's):")
shown = 0
for function, cost in inclusive.most_common():
    if cost / n < 3 or re.search(r"^(main|\(below main\)|0x|std::rt|std::sys::backtrace|__libc_start|core::ops::function|op_profile::main)", function) or function.startswith("<std::rt"):
        continue
    print(f"    {cost / n:8.1f} ({own[function] / n:6.1f})  {function[:130]}")
    shown += 1
    if shown >= int(__import__("os").environ.get("TOP", "14")):
        break
atomic = re.compile(r"^(lock\s|xchg\s.*\()")
wanted = re.compile(r"^(malloc|free|realloc|calloc|clock_gettime|__rust_alloc|__rust_dealloc|__rust_realloc|__rust_alloc_zeroed|syscall|__GI___clock_gettime|__clock_gettime)(@.*)?$|__rdl_|__rust_(alloc|dealloc|realloc)")
entered = collections.Counter()
sites = []
rmw = collections.Counter()
for path, counts in executed.items():
    if not path or not counts:
        continue
    dump = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", "-C", path],
        capture_output=True, text=True, check=False,
    ).stdout
    function = "?"
    for text in dump.splitlines():
        m = re.match(r"^([0-9a-f]+) <(.*)>:$", text)
        if m:
            function = m.group(2)
            # Calls counted as executions of the entry instruction: robust
            # where callgrind's per-call-site records are split by inlining.
            if wanted.search(function):
                entered[function] += counts.get(int(m.group(1), 16), 0)
            continue
        m = re.match(r"^\s+([0-9a-f]+):\s+(.*)$", text)
        if m and atomic.search(m.group(2)):
            count = counts.get(int(m.group(1), 16), 0)
            if count:
                sites.append((path, int(m.group(1), 16), function, count))
                rmw[(function, m.group(2).split()[0] + " " + m.group(2).split()[1] if len(m.group(2).split()) > 1 else m.group(2))] += count

total = sum(rmw.values())
print(f"  atomic RMWs per message: {total / n:.2f}")
by_fn = collections.Counter()
for (function, _), count in rmw.items():
    by_fn[function] += count
for function, count in by_fn.most_common():
    if count / n >= 0.005:
        print(f"    {count / n:6.2f}  {function[:140]}")
# Which atomic: the source of each site, through its inlining chain
# (innermost first, as `addr2line -i` prints it).
for path in {site[0] for site in sites}:
    mine = [site for site in sites if site[0] == path and site[3] / n >= 0.005]
    if not mine:
        continue
    for _, addr, function, count in sorted(mine, key=lambda site: -site[3]):
        chain = subprocess.run(
            ["addr2line", "-i", "-f", "-C", "-e", path, hex(addr)],
            capture_output=True, text=True, check=False,
        ).stdout.splitlines()
        where = ["/".join(chain[i + 1].split("/")[-2:])
                 for i in range(0, len(chain) - 1, 2)
                 if "sync/atomic.rs" not in chain[i + 1]]
        print(f"    {count / n:6.2f}  at {' <- '.join(where[:4])[:200]}")
print("  calls per message (entries into the function):")
for callee, count in entered.most_common():
    if count / n >= 0.005:
        print(f"    {count / n:6.2f}  {callee[:100]}")
