"""Photos → 3D model: Arkhiv's pipeline on photo sets, stage by stage, with quality figures,
side by side with COLMAP's own structure from motion (pycolmap with its default options) on the
same images for the sparse part.

Each run is its own child process, measured by GNU time (wall time, peak RSS):

- Arkhiv: `mesh_from_photos` (EXIF-free working copies at 1600 px, SIFT, matching, mapping,
  then the CPU dense stereo, surface, colour and the glTF master);
- COLMAP defaults on the original photos: `extract_features` (SIFT at up to 3200 px),
  `match_exhaustive`, `incremental_mapping`, every option at pycolmap's default;
- COLMAP defaults on Arkhiv's working copies (same pixels as Arkhiv's sparse part).

Quality: photos placed, mean reprojection error, sparse points; for the model, faces, and how
much it looks like the photos (rendered from each other photo's pose: coverage and grey-level
correlation). A set whose model cannot be made still gets its sparse figures and the reason.
Default data, from ../shared/corpora/photogrammetry: Sceaux castle (11 photos around a facade,
no GPS) and Lund (29 phone photos walking along a street, with GPS)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from bag_validation import run_child  # noqa: E402

PHOTOGRAMMETRY = REPO.parent / "shared" / "corpora" / "photogrammetry"
SETS = (PHOTOGRAMMETRY / "sceaux-castle" / "images", PHOTOGRAMMETRY / "opensfm-lund" / "images")

ARKHIV_CHILD = """
import json, sys
from pathlib import Path
from arkhiv.reconstruct.photos import mesh_from_photos
from arkhiv.reconstruct.preview import agreement_with_photos
from arkhiv.reconstruct.report import ReconstructionFailed
output = Path(sys.argv[2])
try:
    report = mesh_from_photos(Path(sys.argv[1]), output).as_dict()
    report["agreement"] = agreement_with_photos(output)
except ReconstructionFailed as failure:
    report = failure.report.as_dict()
(output / "bench.json").write_text(json.dumps(report, default=str))
"""

COLMAP_CHILD = """
import json, sys, time
from pathlib import Path
import pycolmap
images, output = Path(sys.argv[1]), Path(sys.argv[2])
output.mkdir(parents=True, exist_ok=True)
database = output / "database.db"
stages = {}
started = time.perf_counter()
pycolmap.extract_features(database, images)
stages["features"] = time.perf_counter() - started
started = time.perf_counter()
pycolmap.match_exhaustive(database)
stages["matching"] = time.perf_counter() - started
started = time.perf_counter()
models = pycolmap.incremental_mapping(database, images, output / "models")
stages["mapping"] = time.perf_counter() - started
model = max(models.values(), key=lambda m: m.num_reg_images(), default=None)
result = {
    "stages": stages,
    "registered": model.num_reg_images() if model else 0,
    "points": model.num_points3D() if model else 0,
    "mean_reprojection_error_px": model.compute_mean_reprojection_error() if model else 0.0,
}
(output / "bench.json").write_text(json.dumps(result))
"""

SPARSE_STAGES = ("prepare images", "features", "matching", "mapping")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=Path, action="append", help="a folder of photos (repeatable)"
    )
    parser.add_argument("--dir", help="where to work (default: a temporary directory)")
    args = parser.parse_args()
    for number, images in enumerate(args.images or SETS):
        if number:
            print()
        bench(images, args.dir)


def bench(images: Path, work_dir: str | None) -> None:
    python = str(REPO / ".venv" / "bin" / "python")
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="arkhiv-bench-reconstruct-") as tmp:
        scratch = Path(tmp)
        ours = scratch / "arkhiv"
        seconds, rss, status = run_child(
            [python, "-c", ARKHIV_CHILD, str(images), str(ours)], scratch
        )
        if status != 0:
            sys.exit(f"Arkhiv's run failed (exit {status})")
        report = json.loads((ours / "bench.json").read_text())
        stages = {stage["name"]: stage for stage in report["stages"]}
        if "mapping" not in stages:
            sys.exit(f"Arkhiv placed no photo: {report['failure']}")
        mapping = stages["mapping"]["figures"]
        photos = stages["prepare images"]["figures"]["images"]

        baselines = {}
        for label, folder_images in (
            ("COLMAP defaults, original photos", images),
            ("COLMAP defaults, Arkhiv's working copies", ours / "work" / "images"),
        ):
            folder = scratch / label.split(",")[1].strip().replace(" ", "-")
            wall, peak, code = run_child(
                [python, "-c", COLMAP_CHILD, str(folder_images), str(folder)], scratch
            )
            if code != 0:
                sys.exit(f"{label} failed (exit {code})")
            baselines[label] = (wall, peak, json.loads((folder / "bench.json").read_text()))

    print(f"photos: {images} ({photos})")
    made = "model" if report["failure"] is None else "no model"
    print(f"\nArkhiv, photos -> {made}: {seconds:.1f} s wall, peak RSS {rss / 1024:.0f} MiB")
    print(f"  {'stage':22s} {'seconds':>8s}  figures")
    for stage in report["stages"]:
        figures = json.dumps(stage["figures"], default=str)
        print(f"  {stage['name']:22s} {stage['seconds']:8.2f}  {figures[:90]}")
    if report["failure"] is None:
        faces = stages["write"]["figures"]["faces"]
        agreement = report["agreement"]
        correlations = sorted(view["correlation"] for view in agreement)
        coverage = [view["coverage"] for view in agreement]
        median = correlations[len(correlations) // 2]
        print(
            f"  model: {faces} faces; rendered from {len(agreement)} photo poses it covers "
            f"{min(coverage):.0%}-{max(coverage):.0%} of each picture, grey-level correlation "
            f"median {median:.2f} (min {correlations[0]:.2f})"
        )
    else:
        print(f"  no model: {report['failure']}")
    for attempt in mapping.get("attempts", []):
        print(
            f"  mapping with {attempt['settings']}: {attempt['placed']}/{photos} placed, "
            f"{attempt['seconds']:.1f} s"
        )

    sparse_seconds = sum(stages[name]["seconds"] for name in SPARSE_STAGES)
    priors = ", GPS priors" if mapping.get("use_prior_position") else ""
    print("\nStructure from motion (the sparse part)")
    header = ("seconds", "ratio", "placed", "points", "error px")
    print(f"  {'run':42s} " + " ".join(f"{name:>8s}" for name in header))
    print(
        f"  {f'Arkhiv (EXIF focal priors{priors})':42s} {sparse_seconds:8.1f} {1.0:8.2f} "
        f"{mapping['registered']:>5d}/{photos:<2d} {mapping['points']:8d} "
        f"{mapping['mean_reprojection_error_px']:8.3f}"
    )
    for label, (wall, peak, found) in baselines.items():
        stage_seconds = sum(found["stages"].values())
        print(
            f"  {label:42s} {stage_seconds:8.1f} {stage_seconds / sparse_seconds:8.2f} "
            f"{found['registered']:>5d}/{photos:<2d} {found['points']:8d} "
            f"{found['mean_reprojection_error_px']:8.3f}"
            f"   (process {wall:.1f} s, peak RSS {peak / 1024:.0f} MiB)"
        )
    print("  ratio: the baseline's time over Arkhiv's for the same stages")


if __name__ == "__main__":
    main()
