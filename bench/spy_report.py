"""
Summarise a py-spy raw (collapsed-stack) profile: inclusive and self share per function.

    python bench/spy_report.py PROFILE [--match callhome_mux] [--top 40]
"""

from __future__ import annotations

import argparse
import collections
import re

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def load(path):
    stacks = []
    with open(path) as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            frames = []
            for frame in stack.split(";"):
                m = _FRAME.match(frame)
                if m:
                    short = m.group("file").split("site-packages/")[-1].replace("/work/main/", "")
                    frames.append(f"{m.group('func')} ({short})")
                else:
                    frames.append(frame)
            stacks.append((frames, int(count)))
    return stacks


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("profile")
    parser.add_argument("--match", default="")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--exclude-idle", action="store_true", default=True)
    args = parser.parse_args()
    stacks = load(args.profile)
    idle = sum(c for f, c in stacks if f and "poll" in f[-1] and "epoll" in f[-1])
    total = sum(c for _, c in stacks)
    busy = total - idle
    inclusive = collections.Counter()
    own = collections.Counter()
    for frames, count in stacks:
        if frames and "poll" in frames[-1] and "epoll" in frames[-1]:
            continue
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    print(f"{args.profile}: {total} samples, {busy} busy ({100.0 * busy / max(total, 1):.0f}%)")
    print("inclusive % of busy:")
    for name, count in inclusive.most_common():
        if args.match in name:
            print(f"  {100.0 * count / busy:5.1f}  {name}")
            args.top -= 1
            if args.top <= 0:
                break
    print("self % of busy (top 25):")
    for name, count in own.most_common(25):
        print(f"  {100.0 * count / busy:5.1f}  {name}")


if __name__ == "__main__":
    main()
