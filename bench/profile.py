"""Optional profiling of a target process with py-spy while the load runs (`--py-spy PATH`), and a
summary of the recorded stacks: `python -m bench.profile FILE [--top N] [--match TEXT]`.

py-spy is not a project dependency: install it wherever you like (e.g. a separate venv) and point
the bench at its binary. It samples all threads from outside, without slowing the broker much
(--nonblocking), which cProfile cannot do for waitress's worker threads.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def record(py_spy: str | None, pid: int, out: Path, gil: bool = False) -> Iterator[None]:
    """Sample `pid` for as long as the block runs; write collapsed stacks ("a;b;c N") to `out`.
    With `gil` only the thread holding the GIL is sampled: where the Python CPU time goes."""
    if not py_spy:
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = ["--gil"] if gil else []
    spy = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200", "--nonblocking", *extra, "-o", str(out)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on interrupt
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(5)


def load_stacks(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in Path(path).read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def summarize(path: Path, top: int = 25, match: str | None = None) -> str:
    """Self and inclusive share of samples per function; `match` keeps stacks containing TEXT."""
    stacks = load_stacks(path)
    if match:
        stacks = [(f, n) for f, n in stacks if any(match in frame for frame in f)]
    total = sum(n for _, n in stacks) or 1
    own, incl = Counter(), Counter()
    for frames, n in stacks:
        own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    lines = [f"{path}: {total} samples" + (f" (stacks containing {match!r})" if match else "")]
    for title, counter in (("self", own), ("inclusive", incl)):
        lines.append(f"-- top {top} by {title} time")
        for frame, n in counter.most_common(top):
            lines.append(f"{100 * n / total:6.1f}%  {frame}")
    return "\n".join(lines)


# Leaf frames are charged to the first component whose key is in the frame ("function (file:line)").
# Waits come first: in the all-threads view they tell contention (the store's write lock) from idle.
COMPONENTS = (
    ("Store._Tx.__enter__", "store: waiting for the write lock, BEGIN IMMEDIATE"),
    ("_worker (concurrent/futures", "idle: delivery workers waiting for work"),
    ("Condition.wait", "waiting on a condition (idle threads, hand-offs)"),
    ("broker/codec.py", "broker JSON codec"),
    ("broker/store.py", "broker store (SQLite calls)"),
    ("broker/schemas.py", "broker parse/validate/render"),
    ("broker/dispatcher.py", "broker dispatcher"),
    ("broker/webhook.py", "broker webhook client"),
    ("broker/", "broker other"),
    ("urllib3/", "urllib3 (HTTP client)"),
    ("http/client.py", "urllib3 (HTTP client)"),
    ("waitress/", "waitress (WSGI server)"),
    ("werkzeug/", "flask/werkzeug"),
    ("flask/", "flask/werkzeug"),
    ("logging/", "logging"),
    ("prometheus_client/", "prometheus metrics"),
    ("threading.py", "threading (locks, events, hand-offs)"),
    ("queue.py", "threading (locks, events, hand-offs)"),
    ("concurrent/futures", "threading (locks, events, hand-offs)"),
    ("json/", "stdlib json"),
    ("socket.py", "sockets"),
    ("selectors.py", "sockets"),
)


def by_component(path: Path) -> str:
    stacks = load_stacks(path)
    total = sum(n for _, n in stacks) or 1
    share = Counter()
    for frames, n in stacks:
        leaf = frames[-1]
        share[next((name for key, name in COMPONENTS if key in leaf), "other: " + leaf.split(" (")[-1].split(":")[0].rstrip(")"))] += n
    lines = [f"{path}: {total} samples, charged to the component of the innermost frame"]
    for name, n in share.most_common(20):
        lines.append(f"{100 * n / total:6.1f}%  {name}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Summarize py-spy raw (collapsed) stacks")
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match")
    parser.add_argument("--components", action="store_true", help="group samples by component instead")
    args = parser.parse_args()
    print(by_component(args.file) if args.components else summarize(args.file, args.top, args.match))


if __name__ == "__main__":
    main()
