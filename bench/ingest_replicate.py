"""Submit to preserved: `arkhiv submit BAG --wait` of a ~1 GB bag into an archive with three local
stores, against `bagit.py --validate` plus three `cp -r` of the bag (and `sync`).

Arkhiv does, in its own child process measured by GNU time: intake into staging, full checksum
validation (sha512+sha256 in one read), profile and capture metadata, ClamAV (a one-signature
test database, so the engine's reading speed is measured), PRONOM identification,
characterization, then the AIP: METS/PREMIS/CRM, three copies each fsynced and read back, the
catalog. ClamAV runs as the archive should run it, a clamd of the bench's own serving two
streams (clamscan reloads the signatures on every submission); `--clamscan` measures clamscan
instead. The baseline only validates and copies. Prints both times, Arkhiv's per-step times from
its ingest report, peak RSS and the ratio."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from bag_validation import run_child  # noqa: E402

from arkhiv.ingest.virus import scan_tree  # noqa: E402
from arkhiv.policies.ingest import IngestPolicy  # noqa: E402
from tests.clamd_process import start_clamd  # noqa: E402

BASELINE = """
set -e
bagit.py --validate --processes 2 "$1" 2>/dev/null
for store in a b c; do cp -r "$1" "$2/$store"; done
sync
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=1000)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument(
        "--clamscan", action="store_true", help="scan with clamscan instead of a clamd"
    )
    parser.add_argument("--dir", help="where to work (default: a temporary directory)")
    args = parser.parse_args()

    from archive_setup import random_bag, test_signatures

    clamd = None
    work = Path(tempfile.mkdtemp(prefix="arkhiv-submit-bench-", dir=args.dir))
    try:
        bag, size = random_bag(work, args.megabytes, args.files, seed=6)
        signatures = test_signatures(work)
        env = dict(os.environ)
        env.update(ARKHIV_HOME=str(work / "home"), ARKHIV_INGEST__CLAMAV_DATABASE=str(signatures))
        if not args.clamscan:
            clamd = start_clamd(work / "clamd", signatures, IngestPolicy())
            env["ARKHIV_INGEST__CLAMD_SOCKET"] = str(work / "clamd" / "clamd.sock")
        arkhiv = [sys.executable, "-m", "arkhiv"]
        subprocess.run([*arkhiv, "init"], env=env, check=True, capture_output=True)
        os.environ.update(env)
        seconds, rss, status = run_child([*arkhiv, "submit", str(bag), "--wait"], work)
        assert status == 0, "submit failed"
        listed = subprocess.run(
            [*arkhiv, "submissions", "list", "--json"], env=env, capture_output=True, text=True
        )
        submission = json.loads(listed.stdout)[0]
        shown = subprocess.run(
            [*arkhiv, "submissions", "show", submission["id"], "--json"],
            env=env,
            capture_output=True,
            text=True,
        )
        report = json.loads(shown.stdout)
        assert report["status"] == "archived", report["status"]

        copies = work / "copies"
        copies.mkdir()
        bagit = shutil.which("bagit.py") or str(Path(sys.executable).parent / "bagit.py")
        base_seconds, _base_rss, base_status = run_child(
            ["bash", "-c", BASELINE.replace("bagit.py", bagit), "baseline", str(bag), str(copies)],
            work,
        )
        assert base_status == 0, "baseline failed"
        print(f"bag: {size / 1e6:.0f} MB in {args.files} files, 3 local stores")
        print(f"arkhiv submit --wait: {seconds:6.2f} s  peak RSS {rss / 1024:.1f} MiB")
        for step in report["report"]["steps"]:
            took = datetime.fromisoformat(step["ended_at"]) - datetime.fromisoformat(
                step["started_at"]
            )
            print(f"    {step['label']:<28} {took.total_seconds():6.2f} s")
        print(f"bagit.py --validate + 3x cp -r + sync: {base_seconds:6.2f} s")
        print(f"ratio Arkhiv / baseline: {seconds / base_seconds:.2f}x the time")
        # The floor: the virus check alone, as ingest runs it, on the same bag (a fresh clamd:
        # the first one remembers the files it passed).
        socket_path = None
        if clamd is not None:
            clamd.terminate()
            clamd.wait()
            clamd = start_clamd(work / "clamd-again", signatures, IngestPolicy())
            socket_path = str(work / "clamd-again" / "clamd.sock")
        policy = IngestPolicy(clamav_database=str(signatures), clamd_socket=socket_path)
        started = time.perf_counter()
        assert scan_tree(bag, policy).clean
        alone = time.perf_counter() - started
        print(
            f"ClamAV alone on the bag: {alone:6.2f} s ({alone / base_seconds:.2f}x the baseline); "
            f"the rest (total minus that): {(seconds - alone) / base_seconds:.2f}x"
        )
    finally:
        if clamd is not None:
            clamd.terminate()
            clamd.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
