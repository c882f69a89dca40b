#!/usr/bin/env python3
"""The code's shape at two commits, side by side: the largest files and the largest functions.

    scripts/bench/code_sizes.py [BEFORE [AFTER]]     (default: 27668fc and HEAD)

Reads the Rust sources of the workspace crates (host, image, methods, mind, kernels) straight
from git, so the working tree is untouched. A function is counted from its `fn` line to the line
that closes it at the same indentation (rustfmt's layout); tests (`mod tests`) are left out.
"""
import re
import subprocess
import sys

ROOTS = ("host/src/", "image/src/", "methods/src/", "mind/src/", "kernels/src/")


def files(commit):
    out = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", commit],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    return [f for f in out if f.endswith(".rs") and f.startswith(ROOTS)]


def text(commit, path):
    return subprocess.run(
        ["git", "show", f"{commit}:{path}"], check=True, capture_output=True, text=True
    ).stdout


FN = re.compile(r"^(\s*)(?:pub(?:\([a-z]+\))?\s+)?(?:const\s+)?(?:unsafe\s+)?fn\s+(\w+)")


def functions(path, source):
    lines = source.split("\n")
    out = []
    in_tests = None
    for i, line in enumerate(lines):
        if in_tests is None and re.match(r"^mod tests \{", line):
            in_tests = i
            break
        m = FN.match(line)
        if not m or line.rstrip().endswith(";"):
            continue
        indent = m.group(1)
        for j in range(i + 1, len(lines)):
            if lines[j] == indent + "}":
                out.append((j - i + 1, f"{path}:{i + 1} {m.group(2)}"))
                break
    return out


def shape(commit):
    sizes, fns = [], []
    for path in files(commit):
        source = text(commit, path)
        sizes.append((source.count("\n"), path))
        fns.extend(functions(path, source))
    return sorted(sizes, reverse=True), sorted(fns, reverse=True)


def main():
    before = sys.argv[1] if len(sys.argv) > 1 else "27668fc"
    after = sys.argv[2] if len(sys.argv) > 2 else "HEAD"
    (bs, bf), (as_, af) = shape(before), shape(after)
    print(f"| | {before} | {after} |")
    print("| --- | --- | --- |")
    print(f"| Rust files | {len(bs)} | {len(as_)} |")
    print(f"| lines | {sum(n for n, _ in bs)} | {sum(n for n, _ in as_)} |")
    print(f"| files over 1,000 lines | {sum(n > 1000 for n, _ in bs)} | {sum(n > 1000 for n, _ in as_)} |")
    print(f"| functions over 100 lines | {sum(n > 100 for n, _ in bf)} | {sum(n > 100 for n, _ in af)} |")
    print()
    print(f"| largest files, {before} | lines | largest files, {after} | lines |")
    print("| --- | --- | --- | --- |")
    for (n1, p1), (n2, p2) in zip(bs[:8], as_[:8]):
        print(f"| {p1} | {n1} | {p2} | {n2} |")
    print()
    print(f"| largest functions, {before} | lines | largest functions, {after} | lines |")
    print("| --- | --- | --- | --- |")
    for (n1, p1), (n2, p2) in zip(bf[:8], af[:8]):
        print(f"| {p1} | {n1} | {p2} | {n2} |")


if __name__ == "__main__":
    main()
