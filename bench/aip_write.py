"""Writing an AIP: Arkhiv's v1 of an accepted bag on three stores against `cp` + `openssl dgst`.

Builds a bag of ~1 GB in ~500 random files, initializes a throw-away archive with the default
three local stores, and runs the ingest (not measured). Then, each in its own child process
measured by GNU time:

- Arkhiv: `archive_submission` — the version built in staging (hard links), METS/PREMIS/CRM
  generated, every file written to the three stores with fsync and read back to compare its
  sha512, the journal written, the catalog committed;
- baseline: `cp -r` of the bag to three folders on the same disk, `sync`, then
  `openssl dgst -sha512` of every copy (the same bytes moved and verified with standard tools).

Prints wall time, MB/s, peak RSS and the ratio. Page cache state is the same for both: the bag
was just read by the ingest."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from bag_validation import run_child  # noqa: E402

ARKHIV_CHILD = """
import sys
from arkhiv.archive import Archive
from arkhiv.jobs.archiving import archive_submission
archive = Archive.open(sys.argv[1])
result = archive_submission(archive, sys.argv[2], "bench")
assert result["status"] == "preserved", result
"""

BASELINE = """
set -e
for store in a b c; do cp -r "$1" "$2/$store"; done
sync
find "$2" -type f -print0 | xargs -0 -P 2 -n 50 openssl dgst -sha512 > /dev/null
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=1000)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--dir", help="where to work (default: a temporary directory)")
    args = parser.parse_args()

    from archive_setup import accepted_submission, random_bag

    work = Path(tempfile.mkdtemp(prefix="arkhiv-aip-bench-", dir=args.dir))
    try:
        bag, size = random_bag(work, args.megabytes, args.files, seed=4)
        home, submission_id = accepted_submission(work, bag)

        seconds, rss, status = run_child(
            [sys.executable, "-c", ARKHIV_CHILD, str(home), submission_id], work
        )
        assert status == 0, "archiving failed"
        copies = work / "copies"
        copies.mkdir()
        base_seconds, base_rss, base_status = run_child(
            ["bash", "-c", BASELINE, "baseline", str(bag), str(copies)], work
        )
        assert base_status == 0, "baseline failed"
        megabytes = size / 1e6
        print(f"payload: {megabytes:.0f} MB in {args.files} files, 3 stores")
        print(
            f"Arkhiv archive_submission: {seconds:6.2f} s  {3 * megabytes / seconds:7.1f} MB/s "
            f"written+verified  peak RSS {rss / 1024:.1f} MiB"
        )
        print(
            f"cp x3 + sync + openssl:    {base_seconds:6.2f} s  "
            f"{3 * megabytes / base_seconds:7.1f} MB/s  peak RSS {base_rss / 1024:.1f} MiB"
        )
        print(f"ratio Arkhiv / baseline: {seconds / base_seconds:.2f}x the time")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
