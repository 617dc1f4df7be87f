"""Video characterization (MP4, MOV) and location stripping: every place a phone or camera
writes where it stood is read at ingest, sealed, and gone from the copies served.

The videos are encoded here with PyAV (ffmpeg's muxer writes `©xyz` in MOV, `loci` in MP4, and
QuickTime `mdta` keys with `use_metadata_tags`). What the muxer cannot write (XMP, GoPro GPMF,
Google CAMM and Apple `mebx` timed-metadata tracks) is put into its files by the helpers below,
which keep every chunk offset valid, so each file still decodes."""

from __future__ import annotations

import json
import random
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from arkhiv.access.disclosure import (
    VideoError,
    clean_video,
    coordinate_traces,
    is_cleanable_video,
)
from arkhiv.catalog import submissions
from arkhiv.catalog.database import reading
from arkhiv.ingest.characterize import characterize
from arkhiv.ingest.characterize.videos import XMP_UUID, characterize_video, location_regions
from arkhiv.ingest.model import Identification
from arkhiv.jobs.ingest import process_submission
from arkhiv.security.sealing import Sealed
from tests.test_ingest_robustness import record, scanning, staged
from tests.test_submit import CAPTURE

__all__ = ["scanning"]

CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"
FRAMES = 5
EXACT = 1e-9
FIXED_16_16 = 1 / 65536

# (latitude, longitude, altitude): a different place for each form, so none can pass for another
XYZ = (50.4501, 30.5234, 120.0)
MDTA = (48.9226, 24.7111, 250.5)
LOCI = (46.4825, 30.7233, 40.0)
XMP = (49.8397, 24.0297, 296.0)
GPMF = (47.8388, 35.1396, 89.5)
CAMM = (51.4982, 31.2893, 130.0)
MEBX = (48.0159, 37.8028, 200.0)
SOUTH_EAST = (-33.8568, 151.2153, 5.0)
DRONE = (48.5791, 38.0008, None)  # the altitude in DJI's subtitles is not read


# --------------------------------------------------------------------------------------------
# Making videos


def iso6709(point: tuple[float, float, float]) -> str:
    latitude, longitude, altitude = point
    return f"{latitude:+08.4f}{longitude:+09.4f}{altitude:+08.3f}/"


def encode(path: Path, metadata: dict[str, str] | None = None, **options: str) -> Path:
    """A few frames of H.264 (MPEG-4 part 2 where the wheel lacks x264), 64x48."""
    with av.open(str(path), "w", options=options) as container:
        container.metadata.update(metadata or {})
        stream = container.add_stream(CODEC, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(FRAMES):
            pixels = np.full((48, 64, 3), index * 40, np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.time_base, frame.pts = Fraction(1, 10), index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def full(kind: bytes, payload: bytes, version: int = 0, flags: int = 0) -> bytes:
    return box(kind, struct.pack(">I", version << 24 | flags) + payload)


def top_level(data: bytes) -> list[tuple[bytes, int, int]]:
    found, position = [], 0
    while position < len(data):
        size, kind = struct.unpack_from(">I4s", data, position)
        found.append((kind, position, size))
        position += size
    return found


def put(payload: bytes, path: tuple[bytes, ...], new: bytes) -> bytes:
    """`payload` (a container's children) with `new` appended inside the box at `path`,
    creating the boxes missing on the way; the sizes on the path are rewritten."""
    if not path:
        return payload + new
    out, position, done = b"", 0, False
    while position < len(payload):
        size, kind = struct.unpack_from(">I4s", payload, position)
        body = payload[position + 8 : position + size]
        if kind == path[0] and not done:
            body, done = put(body, path[1:], new), True
        out += box(kind, body)
        position += size
    return out if done else out + box(path[0], put(b"", path[1:], new))


def insert(path: Path, where: tuple[bytes, ...], new: bytes) -> Path:
    """Put a box into the movie: only boxes after the media data grow, so no offset moves."""
    data = path.read_bytes()
    kinds = [kind for kind, _start, _size in top_level(data)]
    assert kinds.index(b"moov") > kinds.index(b"mdat"), "the helper needs moov after mdat"
    path.write_bytes(put(data, where, new))
    return path


def xmp_packet(point: tuple[float, float, float]) -> bytes:
    latitude, longitude, altitude = point

    def dm(value: float, positive: str, negative: str) -> str:
        degrees, minutes = int(abs(value)), (abs(value) - int(abs(value))) * 60
        return f"{degrees},{minutes:.6f}{positive if value >= 0 else negative}"

    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
        f'exif:GPSLatitude="{dm(latitude, "N", "S")}" '
        f'exif:GPSLongitude="{dm(longitude, "E", "W")}" '
        f'exif:GPSAltitude="{round(altitude * 10)}/10" exif:GPSAltitudeRef="0"/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def user_data_text(text: str) -> bytes:
    """A QuickTime user data string: length, language, text (as ffmpeg and phones write it)."""
    encoded = text.encode()
    return struct.pack(">HH", len(encoded), 0x15C7) + encoded


def add_metadata_track(
    path: Path, entry: bytes, samples: list[bytes], handler: bytes = b"meta"
) -> Path:
    """A timed-metadata track (GoPro `gpmd`, Google `camm`, Apple `mebx`) whose samples go into
    a second `mdat` before the movie box, in two chunks, with stsz, stsc and stco to find them."""
    data = path.read_bytes()
    moov = next(start for kind, start, _size in top_level(data) if kind == b"moov")
    trak = metadata_trak(entry, samples, moov + 8, handler)
    moov_payload = put(data[moov + 8 :], (), trak)
    path.write_bytes(data[:moov] + box(b"mdat", b"".join(samples)) + box(b"moov", moov_payload))
    return path


def metadata_trak(entry: bytes, samples: list[bytes], base: int, handler: bytes = b"meta") -> bytes:
    """A timed-metadata trak (track id 99) whose samples lie from `base` on, in two chunks; with
    no samples, its tables are empty (a fragmented file's)."""
    first_chunk = len(samples) // 2 or 1
    offsets = [base, base + sum(len(s) for s in samples[:first_chunk])]
    runs = [(1, first_chunk)] + ([(2, len(samples) - first_chunk)] if len(samples) > 1 else [])
    runs = runs[: len(samples)]
    times = [(len(samples), 1000)] if samples else []
    chunk_runs = b"".join(struct.pack(">III", first, count, 1) for first, count in runs)
    sizes = b"".join(struct.pack(">I", len(sample)) for sample in samples)
    chunks = b"".join(struct.pack(">I", offset) for offset in offsets[: len(runs)])
    stbl = box(
        b"stbl",
        full(b"stsd", struct.pack(">I", 1) + entry)
        + full(
            b"stts", struct.pack(">I", len(times)) + b"".join(struct.pack(">II", *t) for t in times)
        )
        + full(b"stsc", struct.pack(">I", len(runs)) + chunk_runs)
        + full(b"stsz", struct.pack(">II", 0, len(samples)) + sizes)
        + full(b"stco", struct.pack(">I", len(runs)) + chunks),
    )
    minf = box(
        b"minf",
        full(b"nmhd", b"")
        + box(b"dinf", full(b"dref", struct.pack(">I", 1) + full(b"url ", b"", flags=1)))
        + stbl,
    )
    mdia = box(
        b"mdia",
        full(b"mdhd", struct.pack(">IIIIHH", 0, 0, 1000, 1000 * len(samples), 0x55C4, 0))
        + full(b"hdlr", b"mhlr" + handler + bytes(12) + b"Telemetry\x00")
        + minf,
    )
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    tkhd = full(b"tkhd", struct.pack(">IIIII", 0, 0, 99, 0, 1000) + bytes(16) + matrix + bytes(8))
    return box(b"trak", tkhd + mdia)


def klv(key: bytes, kind: bytes, size: int, values: bytes | list[bytes]) -> bytes:
    """One GPMF key-length-value, padded to 32 bits."""
    body = b"".join(values) if isinstance(values, list) else values
    repeat = len(body) // size if size else 0
    header = key + kind + struct.pack(">BH", size, repeat)
    return header + body + bytes(-len(body) % 4)


def gpmf_sample(points: list[tuple[float, float, float]], fix: int) -> bytes:
    scale = struct.pack(">5i", 10_000_000, 10_000_000, 1000, 1000, 100)
    rows = [
        struct.pack(">5i", round(lat * 1e7), round(lon * 1e7), round(alt * 1000), 1500, 160)
        for lat, lon, alt in points
    ]
    stream = (
        klv(b"STNM", b"c", 1, b"GPS (Lat., Long., Alt., 2D speed, 3D speed)")
        + klv(b"GPSF", b"L", 4, struct.pack(">I", fix))
        + klv(b"SCAL", b"l", 4, scale)
        + klv(b"GPS5", b"l", 20, rows)
    )
    stream_box = klv(b"STRM", b"\x00", 1, stream)
    return klv(b"DEVC", b"\x00", 1, klv(b"DVID", b"L", 4, struct.pack(">I", 1)) + stream_box)


def sample_entry(kind: bytes, children: bytes = b"") -> bytes:
    return box(kind, bytes(6) + struct.pack(">H", 1) + children)


def camm_sample(point: tuple[float, float, float], fix: int) -> bytes:
    latitude, longitude, altitude = point
    return struct.pack(
        "<HHdiddfffffff", 0, 6, 1.3e9, fix, latitude, longitude, altitude, 3, 5, 0, 0, 0, 1
    )


def stripped(path: Path) -> list[str]:
    """What the cleaner strips besides padding and timed-metadata samples, in file order."""
    return [r.what for r in location_regions(path) if r.box and r.what != "padding"]


def frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def check_cleaned(original: Path, tmp_path: Path, points, raw: list[bytes] = ()) -> Path:
    """The cleaned copy: same size, none of the points (as text or as the raw bytes given), no
    location for the walker, and every frame still decodes."""
    cleaned = clean_video(original, tmp_path / f"clean-{original.name}")
    before, after = original.read_bytes(), cleaned.read_bytes()
    assert len(after) == len(before)
    pairs = [(lat, lon) for lat, lon, _alt in points]
    textual = coordinate_traces(before, pairs)
    assert not coordinate_traces(after, pairs)
    for needle in raw:
        assert needle in before
        assert needle not in after
    assert textual or raw, "the positive control found nothing in the original"
    left = characterize_video(cleaned)
    assert left.valid, left.problems
    assert left.locations == []
    assert frames(cleaned) == frames(original) == FRAMES
    return cleaned


def assert_found(result, point, kind: str, tolerance: float = EXACT) -> None:
    matching = [loc for loc in result.locations if loc.kind == kind]
    assert len(matching) == 1, result.locations
    (location,) = matching
    assert location.source == ""
    assert location.latitude == pytest.approx(point[0], abs=tolerance)
    assert location.longitude == pytest.approx(point[1], abs=tolerance)
    if point[2] is None:
        assert location.altitude is None
    else:
        assert location.altitude == pytest.approx(point[2], abs=max(tolerance, 1e-3))
    assert result.properties["has_location"] is True
    text = json.dumps(result.properties) + " ".join(result.problems)
    assert not coordinate_traces(text.encode(), [point[:2]]), "a coordinate in the report"


# --------------------------------------------------------------------------------------------
# Locations the muxer writes


def test_mov_quicktime_xyz_is_read_and_stripped(tmp_path):
    video = encode(tmp_path / "phone.mov", {"location": iso6709(XYZ)})
    result = characterize_video(video)
    assert result.valid, result.problems
    assert result.properties["metadata_blocks"] == ["quicktime-xyz", "udta"]  # ffmpeg's MOV
    assert_found(result, XYZ, "quicktime-iso6709")
    props = result.properties
    assert props["brand"] == "qt"
    assert (props["width"], props["height"]) == (64, 48)
    assert props["track_kinds"] == ["vide"]
    assert props["codecs"] == (["avc1"] if CODEC == "libx264" else ["mp4v"])
    assert props["duration_s"] == pytest.approx(FRAMES / 10)
    assert stripped(video) == ["udta"]
    check_cleaned(video, tmp_path, [XYZ])


@pytest.mark.parametrize("suffix", [".mov", ".mp4"])
def test_quicktime_mdta_keys_are_read_and_stripped(tmp_path, suffix):
    key = "com.apple.quicktime.location.ISO6709"
    video = encode(
        tmp_path / f"iphone{suffix}",
        {key: iso6709(MDTA), "com.apple.quicktime.make": "Apple"},
        movflags="use_metadata_tags",
    )
    result = characterize_video(video)
    assert result.valid, result.problems
    assert "quicktime-meta" in result.properties["metadata_blocks"]
    assert "quicktime-xyz" not in result.properties["metadata_blocks"]
    assert_found(result, MDTA, "quicktime-iso6709")
    assert stripped(video) == ["udta"]  # ffmpeg puts QuickTime's meta in moov/udta
    check_cleaned(video, tmp_path, [MDTA])


def test_mp4_loci_is_read_and_stripped(tmp_path):
    video = encode(tmp_path / "android.mp4", {"location": iso6709(LOCI)})
    result = characterize_video(video)
    assert result.valid, result.problems
    assert "loci" in result.properties["metadata_blocks"]  # ffmpeg's MP4 muxer writes 3GPP loci
    assert_found(result, LOCI, "mp4-loci", tolerance=FIXED_16_16)
    assert result.properties["brand"] == "isom"
    fixed = struct.pack(">ii", round(LOCI[1] * 65536), round(LOCI[0] * 65536))
    raw = video.read_bytes()
    assert fixed in raw or struct.pack(">ii", int(LOCI[1] * 65536), int(LOCI[0] * 65536)) in raw
    check_cleaned(video, tmp_path, [LOCI], [b"loci"])


def test_xyz_in_a_track_and_in_ilst_southern_and_western_signs(tmp_path):
    video = encode(tmp_path / "track.mp4")
    insert(video, (b"moov", b"trak", b"udta"), box(b"\xa9xyz", user_data_text(iso6709(SOUTH_EAST))))
    item = box(b"\xa9xyz", box(b"data", struct.pack(">II", 1, 0) + iso6709(XYZ).encode()))
    hdlr = full(b"hdlr", bytes(4) + b"mdir" + b"appl" + bytes(9))
    insert(video, (b"moov", b"udta"), full(b"meta", hdlr + box(b"ilst", item)))
    result = characterize_video(video)
    assert result.valid, result.problems
    assert sorted((loc.latitude, loc.longitude) for loc in result.locations) == sorted(
        [SOUTH_EAST[:2], XYZ[:2]]
    )
    check_cleaned(video, tmp_path, [SOUTH_EAST, XYZ])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+50.4501+030.5234+120.000/", (50.4501, 30.5234, 120.0)),
        ("+50.4501+030.5234/", (50.4501, 30.5234, None)),
        ("-33.8568+151.2153+005.000CRSWGS_84/", (-33.8568, 151.2153, 5.0)),
        ("+5027.006-00007.5/", (50 + 27.006 / 60, -(7.5 / 60), None)),  # degrees, minutes
        ("+502700.5+0301500-12.5/", (50.45 + 0.5 / 3600, 30.25, -12.5)),  # and seconds
        ("+40.7484-073.9857+0000.000/", (40.7484, -73.9857, 0.0)),
    ],
)
def test_iso6709_forms(tmp_path, text, expected):
    video = encode(tmp_path / "v.mov")
    insert(video, (b"moov", b"udta"), box(b"\xa9xyz", user_data_text(text)))
    (location,) = characterize_video(video).locations
    assert location.kind == "quicktime-iso6709"
    assert (location.latitude, location.longitude) == pytest.approx(expected[:2], abs=EXACT)
    assert location.altitude == (None if expected[2] is None else pytest.approx(expected[2]))


# --------------------------------------------------------------------------------------------
# Locations put in by hand: XMP, GoPro GPMF, Google CAMM, Apple timed metadata


def test_xmp_in_uuid_and_udta_boxes_is_read_and_stripped(tmp_path):
    video = encode(tmp_path / "xmp.mp4")
    packet = xmp_packet(XMP)
    insert(video, (b"moov", b"udta"), box(b"XMP_", packet))
    insert(video, (b"moov", b"trak"), box(b"uuid", XMP_UUID + packet))
    video.write_bytes(video.read_bytes() + box(b"uuid", XMP_UUID + packet))  # top level
    result = characterize_video(video)
    assert result.valid, result.problems
    assert_found(result, XMP, "xmp-gps", tolerance=1e-6)  # three packets, one place
    assert stripped(video) == ["XMP", "udta", "XMP"]  # in the trak, moov/udta/XMP_, top level
    check_cleaned(video, tmp_path, [XMP])


def test_gopro_gpmf_track_is_read_and_its_samples_zeroed(tmp_path):
    video = encode(tmp_path / "GX010042.mp4")
    later = (GPMF[0] + 0.0001, GPMF[1] + 0.0002, GPMF[2] + 1)
    samples = [
        gpmf_sample([(0.0, 0.0, 0.0)], fix=0),  # no lock yet: not a fix
        gpmf_sample([GPMF, later], fix=3),
        gpmf_sample([later, later, later], fix=3),
    ]
    entry = sample_entry(b"gpmd")
    add_metadata_track(video, entry, samples)
    result = characterize_video(video)
    assert result.valid, result.problems
    assert_found(result, GPMF, "gpmf-gps", tolerance=1e-7)
    assert result.properties["gpmf_fixes"] == 5
    assert "gpmd" in result.properties["codecs"] and "meta" in result.properties["track_kinds"]
    raw = struct.pack(">i", round(GPMF[0] * 1e7))
    cleaned = check_cleaned(video, tmp_path, [GPMF], [raw])
    assert b"gpmd" in cleaned.read_bytes()  # the track is still there, its samples zero
    assert "gpmf_fixes" in characterize_video(cleaned).properties


def test_google_camm_track_is_read_and_its_samples_zeroed(tmp_path):
    video = encode(tmp_path / "street-view.mp4")
    samples = [camm_sample((10.0, 10.0, 0.0), fix=0), camm_sample(CAMM, fix=3)]
    add_metadata_track(video, sample_entry(b"camm"), samples, handler=b"camm")
    result = characterize_video(video)
    assert result.valid, result.problems
    assert_found(result, CAMM, "camm-gps")
    assert result.properties["camm_fixes"] == 1
    check_cleaned(video, tmp_path, [CAMM], [struct.pack("<d", CAMM[0])])


def test_apple_timed_metadata_location_is_read_and_zeroed(tmp_path):
    video = encode(tmp_path / "cinematic.mov")
    key = b"com.apple.quicktime.location.ISO6709"
    keys = box(b"keys", box(struct.pack(">I", 1), box(b"keyd", b"mdta" + key)))
    value = iso6709(MEBX).encode()
    sample = struct.pack(">II", 8 + len(value), 1) + value
    add_metadata_track(video, sample_entry(b"mebx", keys), [sample, sample])
    result = characterize_video(video)
    assert result.valid, result.problems
    assert_found(result, MEBX, "quicktime-timed-iso6709")
    check_cleaned(video, tmp_path, [MEBX])


def text_entry() -> bytes:
    """A 3GPP timed text sample entry (display flags, justification, colours, box, style, one
    font)."""
    fonts = box(b"ftab", struct.pack(">HHB", 1, 1, 5) + b"Serif")
    style = struct.pack(">HHHBB4B", 0, 0, 1, 0, 18, 255, 255, 255, 255)
    return sample_entry(b"tx3g", bytes(4) + b"\x01\xff" + bytes(4) + bytes(8) + style + fonts)


def subtitle(text: str) -> bytes:
    encoded = text.encode()
    return struct.pack(">H", len(encoded)) + encoded


def test_dji_telemetry_subtitles_are_read_and_zeroed_captions_kept(tmp_path):
    video = encode(tmp_path / "DJI_0042.mp4")
    telemetry = [
        f"F/2.8, SS 640, ISO 100, EV 0, [latitude: {DRONE[0]:.6f}] "
        f"[longtitude: {DRONE[1]:.6f}] [rel_alt: 31.2 abs_alt: 240.5]",
        f"GPS({DRONE[1] + 0.0001:.4f},{DRONE[0]:.4f},23) D 12.3m H 31.2m",
    ]
    add_metadata_track(video, text_entry(), [subtitle(t) for t in telemetry], handler=b"sbtl")
    add_metadata_track(video, text_entry(), [subtitle("The north portal")], handler=b"sbtl")
    result = characterize_video(video)
    assert result.valid, result.problems
    assert_found(result, DRONE, "subtitle-gps", tolerance=1e-6)
    cleaned = check_cleaned(video, tmp_path, [DRONE])
    assert b"The north portal" in cleaned.read_bytes()


def test_an_unknown_timed_metadata_track_counts_as_location_bearing(tmp_path):
    video = encode(tmp_path / "drone.mp4")
    add_metadata_track(video, sample_entry(b"djmd"), [b"opaque telemetry"])
    result = characterize_video(video)
    assert result.valid and result.locations == []
    assert result.properties["has_location"] is True
    cleaned = clean_video(video, tmp_path / "clean.mp4")
    assert b"opaque telemetry" not in cleaned.read_bytes()
    assert frames(cleaned) == FRAMES


def test_a_video_without_location_loses_only_what_it_does_not_need(tmp_path):
    video = encode(tmp_path / "plain.mov")
    result = characterize_video(video)
    assert result.valid and result.locations == []
    assert result.properties["has_location"] is False
    regions = location_regions(video)
    before = video.read_bytes()
    after = clean_video(video, tmp_path / "copy.mov").read_bytes()
    assert b"Lavf" in before and b"Lavf" not in after  # the encoder's tag, in udta
    changed = bytearray(before)
    for region in regions:
        changed[region.start : region.start + region.length] = after[
            region.start : region.start + region.length
        ]
    assert bytes(changed) == after  # nothing else moved or changed
    assert frames(tmp_path / "copy.mov") == FRAMES


# --------------------------------------------------------------------------------------------
# Hiding places outside the movie's metadata (a security review's): meco, fragments, emsg, media
# data no track uses. The cleaner keeps only what it walked; the rest is read and zeroed.


def xyz_udta(point: tuple[float, float, float]) -> bytes:
    return box(b"udta", box(b"\xa9xyz", user_data_text(iso6709(point))))


def ilst_meta(point: tuple[float, float, float]) -> bytes:
    """iTunes-style metadata: an `ilst` item `©xyz` with its `data`."""
    item = box(b"\xa9xyz", box(b"data", struct.pack(">II", 1, 0) + iso6709(point).encode()))
    return full(
        b"meta", full(b"hdlr", bytes(4) + b"mdir" + b"appl" + bytes(9)) + box(b"ilst", item)
    )


def fragmented(path: Path, metadata: dict[str, str] | None = None) -> Path:
    """A fragmented MP4 as ffmpeg writes one for streaming: an empty movie box, then a moof and
    its mdat; runs count from their moof, and no mfra index of absolute offsets."""
    return encode(
        path, metadata, movflags="frag_keyframe+empty_moov+default_base_moof+skip_trailer"
    )


def into_first_fragment(path: Path, where: tuple[bytes, ...], new: bytes) -> Path:
    """Put a box into the first moof (at `where` inside it): the moof grows, so its runs' data
    offsets (from the moof's start) grow as much and the samples are still found."""
    data = path.read_bytes()
    moof, size = next((start, size) for kind, start, size in top_level(data) if kind == b"moof")
    growth = len(put(data[moof + 8 : moof + size], where, new)) - (size - 8)
    payload = bytearray(data[moof + 8 : moof + size])
    for kind, start, traf_size in top_level(bytes(payload)):
        if kind != b"traf":
            continue
        position = start + 8
        while position < start + traf_size:
            child_size, child = struct.unpack_from(">I4s", payload, position)
            if child == b"trun" and payload[position + 11] & 1:  # data offset present
                (offset,) = struct.unpack_from(">i", payload, position + 16)
                struct.pack_into(">i", payload, position + 16, offset + growth)
            position += child_size
    grown = box(b"moof", put(bytes(payload), where, new))
    path.write_bytes(data[:moof] + grown + data[moof + size :])
    return path


@pytest.mark.parametrize(
    ("where", "content"),
    [((), "meta"), ((b"moov",), "udta"), ((b"moov", b"trak"), "meta")],
    ids=["top", "moov", "trak"],
)
def test_meco_is_read_and_stripped(tmp_path, where, content):
    video = encode(tmp_path / "meco.mp4")
    insert(video, (*where, b"meco"), ilst_meta(XYZ) if content == "meta" else xyz_udta(XYZ))
    result = characterize_video(video)
    assert result.valid, result.problems
    assert_found(result, XYZ, "quicktime-iso6709")
    assert "meco" in result.properties["metadata_blocks"]
    assert sorted(stripped(video)) == ["meco", "udta"]  # and the encoder's tag in moov/udta
    check_cleaned(video, tmp_path, [XYZ])


@pytest.mark.parametrize(
    ("where", "content"),
    [((b"udta",), "xyz"), ((b"traf", b"udta"), "xyz"), ((b"traf",), "xmp")],
    ids=["moof-udta", "traf-udta", "traf-uuid-xmp"],
)
def test_metadata_in_a_movie_fragment_is_read_and_stripped(tmp_path, where, content):
    video = fragmented(tmp_path / "fragment.mp4")
    if content == "xyz":
        new, point, kind = box(b"\xa9xyz", user_data_text(iso6709(XYZ))), XYZ, "quicktime-iso6709"
    else:
        new, point, kind = box(b"uuid", XMP_UUID + xmp_packet(XMP)), XMP, "xmp-gps"
    into_first_fragment(video, where, new)
    result = characterize_video(video)
    assert result.valid, result.problems
    assert result.properties["fragmented"] is True
    assert_found(result, point, kind, tolerance=1e-6)
    inside = "udta" if content == "xyz" else "XMP"
    assert stripped(video) == ["udta", inside]  # the encoder's tag in moov, then the fragment's
    check_cleaned(video, tmp_path, [point])


@pytest.mark.parametrize("kind", [b"emsg", b"pdin", b"prft"])
def test_event_download_and_time_boxes_are_read_and_stripped(tmp_path, kind):
    video = encode(tmp_path / "boxes.mp4")
    text = iso6709(XYZ).encode()
    if kind == b"emsg":  # version 0: scheme, value, timescale, time delta, duration, id, message
        payload = b"urn:example:position\0\0" + struct.pack(">IIII", 1000, 0, 0, 1) + text
    else:  # progressive download rates, producer reference time: numbers, and text after them
        payload = bytes(16) + text
    video.write_bytes(video.read_bytes() + full(kind, payload))
    result = characterize_video(video)
    assert result.valid, result.problems
    assert_found(result, XYZ, "quicktime-iso6709")
    assert stripped(video) == ["udta", "metadata"]  # the encoder's tag, then the box
    check_cleaned(video, tmp_path, [XYZ])


def unused(path: Path) -> list[tuple[int, int]]:
    return [(r.start, r.length) for r in location_regions(path) if r.what == "unused media"]


def test_a_second_mdat_no_track_uses_is_read_and_zeroed(tmp_path):
    video = encode(tmp_path / "two-mdat.mp4")
    data = video.read_bytes()
    moov = next(start for kind, start, _size in top_level(data) if kind == b"moov")
    extra = box(b"mdat", xmp_packet(XMP))
    video.write_bytes(data[:moov] + extra + data[moov:])  # the samples before it stay put
    result = characterize_video(video)
    assert result.valid, result.problems
    assert_found(result, XMP, "xmp-gps", tolerance=1e-6)
    assert unused(video) == [(moov + 8, len(extra) - 8)]
    check_cleaned(video, tmp_path, [XMP])


def test_a_tail_of_mdat_after_the_last_sample_is_read_and_zeroed(tmp_path):
    video = encode(tmp_path / "tail.mp4")
    data = video.read_bytes()
    mdat, size = next((start, size) for kind, start, size in top_level(data) if kind == b"mdat")
    tail = b"\0" * 16 + iso6709(XYZ).encode() + b" latitude"
    grown = struct.pack(">I", size + len(tail)) + data[mdat + 4 : mdat + size] + tail
    video.write_bytes(data[:mdat] + grown + data[mdat + size :])  # moov's offsets point before
    result = characterize_video(video)
    assert result.valid, result.problems
    assert_found(result, XYZ, "quicktime-iso6709")
    assert unused(video) == [(mdat + size, len(tail))]
    cleaned = check_cleaned(video, tmp_path, [XYZ])
    after = cleaned.read_bytes()
    assert after[mdat + size : mdat + size + len(tail)] == bytes(len(tail))
    assert after[mdat : mdat + size] == video.read_bytes()[mdat : mdat + size]  # samples kept


def test_a_location_in_a_box_the_movie_needs_makes_the_cleaner_refuse(tmp_path):
    video = encode(tmp_path / "handler.mp4")
    data = video.read_bytes()
    assert data.count(b"VideoHandler") == 1
    video.write_bytes(data.replace(b"VideoHandler", b"+50.4+030.52"))  # the track's hdlr name
    result = characterize_video(video)
    assert result.valid, result.problems
    assert [(loc.latitude, loc.longitude) for loc in result.locations] == [(50.4, 30.52)]
    with pytest.raises(VideoError, match="needs to play"):
        clean_video(video, tmp_path / "clean.mp4")  # cutting the handler out breaks the track
    assert not (tmp_path / "clean.mp4").exists()


def test_a_fragmented_mp4_is_cleaned_and_still_plays(tmp_path):
    video = encode(
        tmp_path / "stream.mp4", {"location": iso6709(LOCI)}, movflags="frag_keyframe+empty_moov"
    )
    kinds = [kind for kind, _start, _size in top_level(video.read_bytes())]
    assert kinds[:4] == [b"ftyp", b"moov", b"moof", b"mdat"] and b"mfra" in kinds
    result = characterize_video(video)
    assert result.valid, result.problems
    assert result.properties["fragmented"] is True
    assert_found(result, LOCI, "mp4-loci", tolerance=FIXED_16_16)
    assert stripped(video) == ["udta"]
    assert unused(video) == []  # every byte of the fragments' mdat is a sample of the video
    check_cleaned(video, tmp_path, [LOCI], [b"loci"])


def test_timed_metadata_in_movie_fragments_is_read_and_zeroed(tmp_path):
    video = fragmented(tmp_path / "GX-fragmented.mp4")
    data = video.read_bytes()
    moov, size = next((start, size) for kind, start, size in top_level(data) if kind == b"moov")
    trex = full(b"trex", struct.pack(">IIIII", 99, 1, 1000, 0, 0))
    moov_payload = put(put(data[moov + 8 : moov + size], (b"mvex",), trex), (), b"")
    moov_payload += metadata_trak(sample_entry(b"gpmd"), [], 0)
    samples = [gpmf_sample([GPMF], fix=3), gpmf_sample([GPMF], fix=3)]
    # a traf for track 99 counting from its moof (default-base-is-moof), sizes in the run
    tfhd = full(b"tfhd", struct.pack(">I", 99), flags=0x20000)
    run = struct.pack(">I", len(samples)) + b"".join(struct.pack(">I", len(s)) for s in samples)
    moof_size = 8 + 16 + 8 + len(tfhd) + 16 + len(run)
    trun = full(b"trun", run[:4] + struct.pack(">i", moof_size + 8) + run[4:], flags=0x201)
    moof = box(b"moof", full(b"mfhd", struct.pack(">I", 2)) + box(b"traf", tfhd + trun))
    assert len(moof) == moof_size
    fragment = moof + box(b"mdat", b"".join(samples))
    video.write_bytes(data[:moov] + box(b"moov", moov_payload) + data[moov + size :] + fragment)
    result = characterize_video(video)
    assert result.valid, result.problems
    assert_found(result, GPMF, "gpmf-gps", tolerance=1e-7)
    assert result.properties["gpmf_fixes"] == 2
    assert unused(video) == []
    raw = struct.pack(">i", round(GPMF[0] * 1e7))
    check_cleaned(video, tmp_path, [GPMF], [raw])


# --------------------------------------------------------------------------------------------
# Box sizes: 64-bit, "to the end", terminators; malformed files


def test_64_bit_and_to_the_end_sizes(tmp_path):
    video = encode(tmp_path / "sizes.mov")
    text = user_data_text(iso6709(XYZ))
    large = struct.pack(">I4sQ", 1, b"\xa9xyz", 16 + len(text)) + text
    insert(video, (b"moov", b"udta"), large + bytes(4))  # and QuickTime's zero terminator
    packet = xmp_packet(XMP)
    large_xmp = struct.pack(">I4sQ", 1, b"uuid", 32 + len(packet)) + XMP_UUID + packet
    to_the_end = struct.pack(">I4s", 0, b"uuid") + XMP_UUID + packet
    video.write_bytes(video.read_bytes() + large_xmp + to_the_end)
    result = characterize_video(video)
    assert result.valid, result.problems
    assert_found(result, XYZ, "quicktime-iso6709")
    assert_found(result, XMP, "xmp-gps", tolerance=1e-6)
    *_, large_region, last = [r for r in location_regions(video) if r.box]
    assert large_region.box.large and large_region.length == len(large_xmp)
    assert not last.box.large and last.length == len(to_the_end)
    data = check_cleaned(video, tmp_path, [XYZ, XMP]).read_bytes()
    zeros = bytes(len(packet) + 16)
    large_header = struct.pack(">I4sQ", 1, b"free", len(large_xmp))
    assert data.endswith(large_header + zeros + struct.pack(">I4s", 0, b"free") + zeros)


def malformed_cases(video: bytes) -> dict[str, bytes]:
    moov = next(start for kind, start, _size in top_level(video) if kind == b"moov")
    overrun = bytearray(video)
    overrun[moov + 8 : moov + 12] = struct.pack(">I", len(video))  # mvhd past moov's end
    tiny = bytearray(video)
    tiny[moov + 8 : moov + 12] = struct.pack(">I", 4)
    nested = b"".join(struct.pack(">I4s", 8 * (200 - i), b"udta") for i in range(200))
    return {
        "truncated": video[: len(video) // 2],
        "cut inside moov": video[:-7],
        "child overruns parent": bytes(overrun),
        "impossible size": bytes(tiny),
        "nested too deep": video[:moov] + box(b"moov", nested),
        "not a movie": b"\x00\x00\x00\x10ftypjunk" + bytes(4) + b"garbage" * 10,
        "no movie box": video[:moov],
        "empty": b"",
        "text": b"hello, this is not a video at all\n",
    }


def test_malformed_videos_are_findings_not_exceptions(tmp_path):
    video = encode(tmp_path / "good.mp4", {"location": iso6709(LOCI)}).read_bytes()
    for name, data in malformed_cases(video).items():
        path = tmp_path / f"{name.replace(' ', '-')}.mp4"
        path.write_bytes(data)
        result = characterize_video(path)
        assert result.valid is False, name
        assert result.problems, name
        assert not any(p.startswith("could not be read") for p in result.problems), (name, result)
        assert result.properties["has_location"] is (name != "empty"), name  # nothing ruled out
        with pytest.raises(VideoError):
            clean_video(path, tmp_path / f"clean-{path.name}")
        assert not (tmp_path / f"clean-{path.name}").exists()


def test_damaged_headers_never_break_the_reader_or_leak_through_the_cleaner(tmp_path):
    video = encode(tmp_path / "fuzz.mov", {"location": iso6709(XYZ)})
    add_metadata_track(video, sample_entry(b"gpmd"), [gpmf_sample([GPMF], fix=3)])
    data = video.read_bytes()
    raw = struct.pack(">i", round(GPMF[0] * 1e7))
    moov = next(start for kind, start, _size in top_level(data) if kind == b"moov")
    chance = random.Random(6709)
    damaged = tmp_path / "damaged.mov"
    for attempt in range(150):
        mutated = bytearray(data)
        for _ in range(chance.randint(1, 4)):
            mutated[chance.randrange(moov - 200, len(data))] = chance.randrange(256)
        damaged.write_bytes(bytes(mutated))
        result = characterize_video(damaged)
        assert not any(p.startswith("could not be read") for p in result.problems), attempt
        try:
            cleaned = clean_video(damaged, tmp_path / "clean.mov")
        except VideoError:
            continue
        # (A track whose own type is damaged is stripped whole: its samples are then media data
        # no track uses, zeroed as well.)
        assert not coordinate_traces(cleaned.read_bytes(), [XYZ[:2]]), attempt
        if raw in mutated:
            assert raw not in cleaned.read_bytes(), attempt
        assert characterize_video(cleaned).locations == [], attempt


# --------------------------------------------------------------------------------------------
# Recognising videos


def test_videos_are_recognised_by_content_and_dispatched(tmp_path):
    mov = encode(tmp_path / "a.mov")
    mp4 = encode(tmp_path / "a.mp4")
    renamed = tmp_path / "clip.bin"
    renamed.write_bytes(mp4.read_bytes())
    heic_like = tmp_path / "photo.mp4"
    heic_like.write_bytes(mp4.read_bytes()[:8] + b"heic" + mp4.read_bytes()[12:])
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    assert is_cleanable_video(mov) and is_cleanable_video(mp4) and is_cleanable_video(renamed)
    assert not is_cleanable_video(heic_like) and not is_cleanable_video(text)
    with pytest.raises(VideoError):
        clean_video(heic_like, tmp_path / "out.mp4")

    for mime in ("application/mp4", "video/quicktime", "video/mp4", "audio/3gpp"):
        identified = Identification("fmt/199", mime, "MPEG-4 Media File")
        assert characterize(renamed, identified).tool == characterize_video(renamed).tool
    for name in ("x.mp4", "x.mov", "x.m4v", "x.3gp", "x.qt"):
        (tmp_path / name).write_bytes(mov.read_bytes())
        assert characterize(tmp_path / name, None).properties["brand"] == "qt"


# --------------------------------------------------------------------------------------------
# Ingest: the location is sealed, never in the report


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_an_ingested_video_has_its_location_sealed(scanning, tmp_path):
    folder = tmp_path / "capture"
    folder.mkdir()
    encode(folder / "walkaround.mov", {"location": iso6709(XYZ)})
    submission_id = staged(scanning, folder, capture_metadata=CAPTURE)
    process_submission(scanning, submission_id)
    row = record(scanning, submission_id)
    assert row["status"] == "accepted", row["summary"]
    (entry,) = [f for f in row["report"]["files"] if f["path"] == "data/walkaround.mov"]
    assert entry["format"]["mime_type"] == "video/quicktime"
    assert entry["carries_location"] is True
    assert entry["characterization"]["properties"]["track_kinds"] == ["vide"]
    assert not coordinate_traces(json.dumps(row["report"]).encode(), [XYZ[:2]])

    with reading(scanning.engine) as conn:
        sealed = submissions.sealed_locations_of(conn, submission_id)
    (row,) = [r for r in sealed if r["source_path"] == "data/walkaround.mov"]
    assert row["kind"] == "quicktime-iso6709"
    assert not coordinate_traces(bytes(row["ciphertext"]), [XYZ[:2]])
    opened = scanning.key.unseal(
        Sealed(row["key_id"], row["nonce"], row["ciphertext"]),
        f"{submission_id}:{row['source_path']}:{row['kind']}",
    )
    assert (opened["latitude"], opened["longitude"]) == pytest.approx(XYZ[:2], abs=EXACT)
