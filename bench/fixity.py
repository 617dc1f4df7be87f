"""Fixity audit throughput: `arkhiv audit` of ~2 GB in ~500 files on a local store, against
`openssl dgst -sha512` over the same files in one process.

Builds a throw-away archive with one local store (policy: one copy) and archives a bag of random
files into it (not measured). Then, each in its own child process measured by GNU time: Arkhiv's
audit of every replica on the store (read each file once, sha512 and size against the inventory,
two threads, catalog updated, PREMIS events written) and `openssl dgst -sha512` of the same
content files. Both read the files from the page cache (they were just written). Prints MB/s,
peak RSS and the ratio (baseline time / Arkhiv time; above 1 means Arkhiv is faster)."""

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
from pathlib import Path
from arkhiv.archive import Archive
from arkhiv.fixity.audit import audit
archive = Archive.open(sys.argv[1])
report = audit(archive, store="bench", workers=int(sys.argv[2]))
assert not report.failures and len(report.checks) > 0, report.as_dict()
(Path(sys.argv[3]) / "audit-seconds").write_text(str(report.seconds))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=2000)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", help="where to work (default: a temporary directory)")
    args = parser.parse_args()

    from archive_setup import accepted_submission, random_bag

    from arkhiv.archive import Archive
    from arkhiv.jobs.archiving import archive_submission

    work = Path(tempfile.mkdtemp(prefix="arkhiv-fixity-bench-", dir=args.dir))
    try:
        bag, size = random_bag(work, args.megabytes, args.files, seed=9)
        home, submission_id = accepted_submission(
            work,
            bag,
            ARKHIV_STORES='[{"name": "bench", "kind": "local", "path": "stores/bench", '
            '"region": "here"}]',
            ARKHIV_PRESERVATION__MIN_COPIES="1",
            ARKHIV_PRESERVATION__MIN_REGIONS="1",
        )
        archive = Archive.open(home)
        assert archive_submission(archive, submission_id, "bench")["status"] == "preserved"
        archive.close()
        shutil.rmtree(bag)
        content = sorted(
            str(p)
            for p in (home / "stores" / "bench").rglob("*")
            if "/content/" in str(p) and p.is_file()
        )
        audited = sum(Path(p).stat().st_size for p in content)

        seconds, rss, status = run_child(
            [sys.executable, "-c", ARKHIV_CHILD, str(home), str(args.workers), str(work)], work
        )
        assert status == 0, "audit failed"
        list_file = work / "files.txt"
        list_file.write_text("\0".join(content))
        base_seconds, base_rss, base_status = run_child(
            ["bash", "-c", f"xargs -0 -a {list_file} openssl dgst -sha512 > /dev/null"], work
        )
        assert base_status == 0, "baseline failed"
        megabytes = audited / 1e6
        print(f"audited: {megabytes:.0f} MB in {len(content)} files (payload {size / 1e6:.0f} MB)")
        inside = float((work / "audit-seconds").read_text())
        print(
            f"arkhiv audit ({args.workers} threads): {seconds:6.2f} s  "
            f"{megabytes / seconds:7.1f} MB/s  peak RSS {rss / 1024:.1f} MiB "
            f"(the audit itself, without start-up: {inside:.2f} s, {megabytes / inside:.1f} MB/s)"
        )
        print(
            f"openssl dgst -sha512 (1 process): {base_seconds:6.2f} s  "
            f"{megabytes / base_seconds:7.1f} MB/s  peak RSS {base_rss / 1024:.1f} MiB"
        )
        print(
            f"ratio: Arkhiv is {base_seconds / seconds:.2f}x the single-process baseline "
            f"({base_seconds / inside:.2f}x without the process start-up)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
