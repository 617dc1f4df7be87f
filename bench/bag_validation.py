"""Bag validation: Arkhiv's validate_bag against `bagit.py --validate`, on the same bag.

Generates a bag of random data (default ~1 GB in 500 files) in a temporary directory with
bagit-python, then validates it with each tool in its own child process, alternating them,
`--repeat` times. Both read every byte from the page cache after the first pass. Prints the best
wall time, MB/s and peak RSS (GNU time's %M: the largest of the child and the children it waited
for) of each, the ratio, and the Python heap peak of validate_bag (tracemalloc, in this process).

Arkhiv does more in the same read: besides the manifests' algorithms it computes sha512 and
sha256 of every file. With the default manifests (sha256, sha512, bagit-python's default) the
work is the same; with --checksums md5 bagit-python computes md5 and Arkhiv md5+sha512+sha256."""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import bagit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arkhiv.ingest.bag import validate_bag

REPO = Path(__file__).resolve().parent.parent
GNU_TIME = "/usr/bin/time"

# What a pipeline without Arkhiv's single read does when the manifests lack sha512 and sha256:
# bagit-python's validation, then a second read of the payload for the digests the catalog keeps.
SECOND_PASS_CHILD = """
import hashlib, multiprocessing, os, sys
import bagit

def digests(path):
    hashers = [hashlib.sha512(), hashlib.sha256()]
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            for hasher in hashers:
                hasher.update(block)
    return path, [hasher.hexdigest() for hasher in hashers]

if __name__ == "__main__":
    bag_dir, processes = sys.argv[1], int(sys.argv[2])
    bagit.Bag(bag_dir).validate(processes=processes)
    paths = [os.path.join(top, name) for top, _, names in os.walk(os.path.join(bag_dir, "data"))
             for name in names]
    with multiprocessing.Pool(processes) as pool:
        pool.map(digests, paths)
"""

ARKHIV_CHILD = (
    "import sys; from arkhiv.ingest.bag import validate_bag; "
    "report = validate_bag(sys.argv[1], processes=int(sys.argv[2])); "
    "sys.exit(0 if report.valid else 1)"
)


def make_payload(root: Path, total_bytes: int, files: int, seed: int) -> int:
    """`files` files of random sizes around total_bytes/files, in a few subdirectories."""
    rng = random.Random(seed)
    mean = total_bytes // files
    written = 0
    block = os.urandom(1 << 20)
    for number in range(files):
        size = max(1, int(rng.uniform(0.2, 1.8) * mean))
        target = root / f"scan-{number % 10:02d}" / f"frame-{number:05d}.raw"
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as stream:
            stream.write(os.urandom(64))  # no two files alike
            remaining = size - 64
            while remaining > 0:
                piece = block[: min(remaining, len(block))]
                stream.write(piece)
                remaining -= len(piece)
        written += max(size, 64)
    return written


def run_child(command: list[str], scratch: Path) -> tuple[float, int, int]:
    """(seconds, peak RSS in KiB, exit status) of one child process and the children it waits
    for. GNU time measures it: a child forked straight from this process would start its
    maximum RSS at this process's size, which Linux keeps across exec."""
    rss_file = scratch / "rss"
    started = time.perf_counter()
    status = subprocess.run(
        [GNU_TIME, "-f", "%M", "-o", str(rss_file), *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        check=False,
    ).returncode
    elapsed = time.perf_counter() - started
    return elapsed, int(rss_file.read_text().split()[-1]), status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=1000)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--checksums", default="sha256,sha512", help="manifest algorithms")
    parser.add_argument("--dir", help="where to build the bag (default: a temporary directory)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="arkhiv-bench-bag-") as temporary:
        bag_dir = Path(temporary) / "bag"
        bag_dir.mkdir()
        payload_bytes = make_payload(bag_dir, args.megabytes * 1_000_000, args.files, seed=1)
        started = time.perf_counter()
        bagit.make_bag(str(bag_dir), checksums=args.checksums.split(","), processes=args.processes)
        made = time.perf_counter() - started
        megabytes = payload_bytes / 1e6
        print(
            f"bag: {args.files} files, {megabytes:.0f} MB, manifests {args.checksums}; "
            f"made by bagit-python in {made:.1f} s; {os.cpu_count()} CPUs, "
            f"--processes {args.processes}"
        )

        commands = {
            "arkhiv validate_bag": [
                sys.executable,
                "-c",
                ARKHIV_CHILD,
                str(bag_dir),
                str(args.processes),
            ],
            "bagit.py --validate": [
                sys.executable,
                "-m",
                "bagit",
                "--validate",
                "--processes",
                str(args.processes),
                str(bag_dir),
            ],
        }
        if set(args.checksums.split(",")) != {"sha256", "sha512"}:
            second_pass = Path(temporary) / "second_pass.py"
            second_pass.write_text(SECOND_PASS_CHILD)
            commands["bagit + sha512/sha256 pass"] = [
                sys.executable,
                str(second_pass),
                str(bag_dir),
                str(args.processes),
            ]
        best: dict[str, tuple[float, int]] = {}
        for _round in range(args.repeat):
            for name, command in commands.items():
                seconds, rss, status = run_child(command, Path(temporary))
                if status != 0:
                    raise SystemExit(f"{name} says the bag is invalid (exit {status})")
                previous = best.get(name)
                best[name] = (
                    min(seconds, previous[0]) if previous else seconds,
                    max(rss, previous[1]) if previous else rss,
                )

        tracemalloc.start()
        report = validate_bag(bag_dir, processes=args.processes)
        _current, heap_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert report.valid and len(report.payload) == args.files

        for name, (seconds, rss) in best.items():
            print(
                f"{name:28s} {seconds:7.2f} s {megabytes / seconds:8.1f} MB/s "
                f"peak RSS {rss / 1024:6.1f} MiB ({rss} KiB)"
            )
        arkhiv_seconds = best["arkhiv validate_bag"][0]
        for name, (seconds, _rss) in best.items():
            if name != "arkhiv validate_bag":
                print(f"ratio: Arkhiv is {seconds / arkhiv_seconds:.2f}x the speed of {name}")
        print(f"validate_bag Python heap peak (tracemalloc): {heap_peak / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
