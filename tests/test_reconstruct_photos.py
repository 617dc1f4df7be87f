"""Structure from motion on real photos (Sceaux castle, 11 photos), and sets that cannot be
reconstructed, which must end with a reason rather than a crash."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from arkhiv.reconstruct.photos import PhotoOptions, _focal_prior, sparse_reconstruction
from arkhiv.reconstruct.report import ReconstructionFailed

SCEAUX = "photogrammetry/sceaux-castle/images"


@pytest.fixture(scope="module")
def sceaux(corpora, tmp_path_factory):
    output = tmp_path_factory.mktemp("sceaux")
    report = sparse_reconstruction(corpora / SCEAUX, output)
    return report, output


def test_every_sceaux_photo_is_placed_with_subpixel_error(sceaux, corpora):
    report, output = sceaux
    mapping = report.figures("mapping")
    assert mapping["registered"] == 11 and mapping["unregistered"] == []
    assert mapping["mean_reprojection_error_px"] < 1.0
    assert mapping["points"] > 5000
    # The refined focal length agrees with the calibration shipped with the photos (K.txt).
    calibrated = float((corpora / SCEAUX / "K.txt").read_text().split()[0])
    [camera] = mapping["cameras"].values()
    expected = calibrated * camera["width"] / 2832
    assert abs(camera["params"][0] - expected) / expected < 0.05
    assert report.figures("prepare images")["focal_priors"] == ["exif 35mm"]
    assert (output / "sparse" / "images.bin").is_file()
    assert report.failure is None and json.dumps(report.as_dict())


def test_working_copies_carry_no_metadata_and_no_source_names(sceaux):
    _report, output = sceaux
    copies = sorted((output / "work" / "images").iterdir())
    assert len(copies) == 11
    for copy in copies:
        assert copy.name.startswith("0") and "100_71" not in copy.name
        with Image.open(copy) as image:
            assert max(image.size) == 1600
            assert not image.getexif() and "exif" not in image.info


def _photos(folder, count: int, make) -> None:
    folder.mkdir(parents=True)
    for number in range(count):
        make(number).save(folder / f"photo-{number}.jpg")


def test_two_photos_are_too_few(corpora, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("100_7100.JPG", "100_7101.JPG"):
        shutil.copy(corpora / SCEAUX / name, photos / name)
    (photos / "notes.jpg").write_text("not a picture")
    with pytest.raises(ReconstructionFailed, match="too few photos: 2 readable") as failed:
        sparse_reconstruction(photos, tmp_path / "out")
    report = failed.value.report
    assert report.failure.startswith("too few photos")
    assert report.figures("prepare images")["skipped"][0]["photo"] == "notes.jpg"


def test_featureless_photos_end_with_a_reason(tmp_path):
    _photos(tmp_path / "photos", 5, lambda n: Image.new("RGB", (640, 480), (120 + n, 120, 120)))
    with pytest.raises(ReconstructionFailed, match="could not be put together"):
        sparse_reconstruction(tmp_path / "photos", tmp_path / "out", PhotoOptions())


def test_focal_prior_from_exif():
    exif = Image.Exif()
    assert _focal_prior(exif, 4000, 3000) == (4800.0, "default")
    details = exif.get_ifd(0x8769)
    details[0x920A] = 4.0  # mm
    details[0xA20E] = 1000.0  # pixels per cm
    details[0xA210] = 3
    assert _focal_prior(exif, 4000, 3000) == (400.0, "exif focal plane")
    details[0xA405] = 27
    assert _focal_prior(exif, 4000, 3000) == (3000.0, "exif 35mm")
