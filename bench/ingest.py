"""Ingest throughput: Arkhiv's whole check of a bag against `bagit.py --validate`, same bag.

Builds a BagIt bag of ~1 GB in ~500 files in a temporary directory: mostly random "scan" blobs,
plus real photos and meshes from ../shared/corpora when present (so identification and
characterization do real work), and a capture-metadata.json. Then, each in its own child process
measured by GNU time (Debian package `time`):

- Arkhiv: `run_ingest` — full checksum validation with sha512+sha256 in the same read, profile and
  capture metadata, ClamAV (with a one-signature test database, so the engine's reading speed is
  what is measured), PRONOM identification and characterization of every file;
- bagit-python: `bagit.py --validate --processes 2` (checksums only).

Prints wall time, MB/s, peak RSS, Arkhiv's time per step, and the ratios (validation +
identification + characterization vs bagit-python, and the whole ingest vs bagit-python)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from bag_validation import make_payload, run_child  # noqa: E402

from arkhiv.ingest.bagging import make_bag  # noqa: E402

CORPORA = REPO.parent / "shared" / "corpora"
SAMPLES = [
    "photogrammetry/opensfm-berlin/images/01.jpg",
    "photos-exif/IMG_5195.HEIC",
    "photos-exif/DSCN0010.jpg",
    "3d-models/bunny-multiformat/bunny.glb",
    "3d-models/bunny-multiformat/bunny_binary.ply",
    "3d-models/bunny-multiformat/bunny.stl",
    "pointclouds/simple.laz",
    "pointclouds/bunnyDouble.e57",
]
CAPTURE = {
    "schema_version": "1.0",
    "object": {"title": "Benchmark", "type": "building", "place_name": "Nowhere", "country": "UA"},
    "capture": {"mode": "photos", "captured_at": "2024-05-18T09:42:00+03:00"},
    "contributor": {"pseudonym": "bench", "publish_as": "pseudonym"},
    "rights": {"license": "CC0-1.0"},
    "permission": {"statement": "Generated data.", "granted_by": "n/a"},
}

ARKHIV_CHILD = """
import json, sys
from pathlib import Path
from arkhiv.ingest.identify import Identifier
from arkhiv.ingest.pipeline import run_ingest
from arkhiv.policies.ingest import IngestPolicy
policy = IngestPolicy(clamav_database=sys.argv[2])
result = run_ingest(Path(sys.argv[1]), policy, Identifier(), processes=int(sys.argv[3]))
steps = {}
for step in result.steps:
    seconds = (step.ended_at - step.started_at).total_seconds()
    steps[step.event.label] = steps.get(step.event.label, 0) + seconds
Path(sys.argv[4]).write_text(json.dumps({"accepted": result.accepted, "steps": steps,
    "failures": [c.reason for c in result.checks if c.outcome == "fail"][:5]}))
"""


def build(scratch: Path, megabytes: int, files: int) -> tuple[Path, int]:
    plain = scratch / "capture"
    plain.mkdir()
    samples = [CORPORA / s for s in SAMPLES if (CORPORA / s).is_file()]
    copies = 5 if samples else 0
    for number in range(copies):
        for sample in samples:
            target = plain / "samples" / f"{number:02d}-{sample.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(sample, target)
    sample_bytes = sum(p.stat().st_size for p in plain.rglob("*") if p.is_file())
    blobs = max(1, files - copies * len(samples))
    make_payload(plain, max(blobs, megabytes * 1_000_000 - sample_bytes), blobs, seed=7)
    bag = make_bag(plain, scratch / "bag", capture_metadata=CAPTURE)
    shutil.rmtree(plain)
    size = sum(p.stat().st_size for p in (bag / "data").rglob("*") if p.is_file())
    return bag, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=int, default=1000)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="arkhiv-bench-ingest-") as temp:
        scratch = Path(temp)
        bag, size = build(scratch, args.megabytes, args.files)
        signatures = scratch / "signatures"
        signatures.mkdir()
        (signatures / "bench.ndb").write_text("Bench.Sig:0:*:" + b"NOT-IN-ANY-FILE".hex() + "\n")
        files = sum(1 for p in (bag / "data").rglob("*") if p.is_file())
        print(f"bag: {size / 1e6:.0f} MB in {files} files, {args.processes} processes")

        python = sys.executable
        steps_file = scratch / "steps.json"
        arkhiv_command = [
            python,
            "-c",
            ARKHIV_CHILD,
            str(bag),
            str(signatures),
            str(args.processes),
            str(steps_file),
        ]
        bagit_command = [
            python,
            "-m",
            "bagit",
            "--validate",
            "--processes",
            str(args.processes),
            str(bag),
        ]
        best: dict[str, tuple[float, int]] = {}
        steps: dict[str, float] = {}
        for _ in range(args.repeat):
            for name, command in (("arkhiv", arkhiv_command), ("bagit", bagit_command)):
                seconds, rss_kib, status = run_child(command, scratch)
                if status != 0:
                    raise SystemExit(f"{name} failed with exit status {status}")
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, rss_kib)
                    if name == "arkhiv":
                        outcome = json.loads(steps_file.read_text())
                        steps = outcome["steps"]
        if not outcome["accepted"]:
            print("warning: Arkhiv rejected the generated bag:", outcome["failures"])

    for name, (seconds, rss_kib) in best.items():
        print(
            f"{name:>7}: {seconds:6.2f} s  {size / seconds / 1e6:7.0f} MB/s  "
            f"peak RSS {rss_kib / 1024:6.1f} MiB"
        )
    print("arkhiv steps: " + ", ".join(f"{label} {sec:.2f} s" for label, sec in steps.items()))
    checked = sum(v for k, v in steps.items() if k not in ("virus check",))
    bagit_seconds = best["bagit"][0]
    print(
        f"validation+identification+characterization: {checked:.2f} s, "
        f"{size / checked / 1e6:.0f} MB/s, {bagit_seconds / checked:.2f}x bagit-python's speed"
    )
    print(
        f"whole ingest (with ClamAV): {bagit_seconds / best['arkhiv'][0]:.2f}x bagit-python's speed"
    )


if __name__ == "__main__":
    main()
