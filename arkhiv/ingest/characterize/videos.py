"""Characterization of videos in the ISO base media file format and QuickTime (MP4, MOV, M4V,
3GP): container brand, duration, tracks and codecs, and every precise location a phone or
camera writes into them, so that it is sealed at ingest and `access.disclosure.clean_video`
can strip it from copies (`location_regions` tells the cleaner what to overwrite).

The file is walked box by box, streaming: media data (`mdat`) is read only where no track's
samples lie; metadata boxes and the samples of timed-metadata and text tracks are read within
fixed budgets. Every box size is checked against its parent and the file (64-bit sizes, and
size 0 for "to the end", included); a malformed file becomes a problem of the
characterization, never an exception.

The cleaner works from an allowlist: only the boxes the walker walks and knows a movie needs to
play are kept (`TOP_KEPT`, `STRUCTURE_KEPT`, `FRAGMENT_KEPT`: the movie and its tracks, the
sample tables, movie fragments and their indexes, the media data). Every other box, at any
level and wherever it hides (`meco`, `emsg`, `pdin`, `prft`, user data or metadata in a
`moof` or `traf`, a box of a kind not known here), is read for locations and turned into
zeroed padding. Bytes of `mdat` that no track's samples occupy (a second `mdat`, a tail after
the last sample) are searched at ingest and zeroed in copies. Samples are located from the
sample tables (`stsz`/`stz2`, `stsc`, `stco`/`co64`) and, in fragmented files, from each
`traf`'s `tfhd` (base offset, default size, or the `trex` defaults) and `trun`s: the samples of
timed-metadata and text tracks in fragments are read and zeroed like those in the movie, and
video and sound are kept. Kept boxes up to `MAX_KEPT_SEARCH` (headers, handler names, data
references, brands) are searched too; a location in one cannot be cut out without breaking
the movie, so the cleaner refuses the file (`VideoStructureError`), as it refuses a file it
cannot walk completely.

Locations read (each becomes a `GeoLocation` of the kind in brackets):
- `udta/©xyz` under `moov` or a `trak`: ISO 6709 text, written by Apple, Android and ffmpeg
  ("quicktime-iso6709");
- QuickTime metadata (`meta` with `hdlr` mdta, `keys`, `ilst`):
  com.apple.quicktime.location.ISO6709 and any other value in ISO 6709 form; iTunes-style
  `ilst` items `©xyz` ("quicktime-iso6709");
- 3GPP `loci` (16.16 fixed point) ("mp4-loci");
- XMP in the `uuid` box BE7ACFCB-97A9-42E8-9C71-999491E3AFAC or `udta/XMP_`, parsed as for
  pictures ("xmp-gps", "xmp-gps-dest", "xmp-drone");
- GoPro GPMF: `gpmd` timed-metadata tracks and `udta/GPMF`, GPS5 and GPS9 scaled by SCAL; the
  first fix with a lock, and the number of fixes as `gpmf_fixes` ("gpmf-gps");
- Google CAMM (`camm` tracks): packet types 5 and 6, the first fix ("camm-gps");
- Apple timed metadata (`mebx` tracks) with location keys ("quicktime-timed-iso6709");
- text tracks with DJI's telemetry subtitles, the first position ("subtitle-gps");
- user data and metadata in `meco` (walked as `udta` is), and any other box outside the
  movie's structure (vendor user data, `emsg`, padding an editor left), kept boxes and media
  data no sample occupies: ISO 6709 text and XMP packets in them ("quicktime-iso6709",
  "xmp-gps").

`has_location` is True when any of these is present, parseable or not, when a box outside the
structure, a kept box, unoccupied media data or a text track mentions latitude or longitude,
when a timed-metadata track of another kind is present (its samples are not understood, so a
location cannot be ruled out), and when the file could not be read completely. Not read: the
insides of sample entries (codec configuration), kept boxes larger than `MAX_KEPT_SEARCH`
(long sample tables), and the samples of video and sound tracks. Properties and problems
never quote a value read from the metadata.

Longer than a module should be, on purpose: one walk of the boxes serves both the
characterization and the cleaner's regions (`location_regions`), so that what is read and what
is cut out cannot drift apart. The telemetry decoders (GPMF, CAMM, ISO 6709, DJI subtitles)
live in `video_telemetry`.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import BinaryIO

from arkhiv.ingest.characterize.findings import Findings
from arkhiv.ingest.characterize.images import xmp_packet_locations
from arkhiv.ingest.characterize.video_telemetry import (
    ISO6709_IN_TEXT,
    Gpmf,
    camm_position,
    parse_iso6709,
    plausible,
    subtitle_position,
)
from arkhiv.ingest.model import Characterization, GeoLocation

TOOL = "arkhiv.videos (ISO BMFF/QuickTime box walker)"

MAX_DEPTH = 16
MAX_BOXES = 1_000_000  # boxes walked per file: a file of nothing but tiny boxes is hostile
MAX_BOX_READ = 16 * 1024**2  # one metadata box or sample table read into memory
MAX_METADATA_BYTES = 64 * 1024**2  # metadata boxes and tables read, per file
MAX_SAMPLE_BYTES = 64 * 1024**2  # timed-metadata samples and unoccupied media read, per file
MAX_SAMPLES = 2_000_000  # samples per track (in the movie; per run in a fragment)
MAX_KEPT_SEARCH = 64 * 1024  # kept boxes larger than this (sample tables) are not searched

XMP_UUID = bytes.fromhex("BE7ACFCB97A942E89C71999491E3AFAC")
# HEIF/AVIF pictures and raw photos share the box format; they are pictures, not videos.
IMAGE_BRANDS = {
    b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"mif2",
    b"msf1", b"avif", b"avis", b"avci", b"avcs", b"jpeg", b"jpgs", b"crx ",
}  # fmt: skip
# Boxes that may open a QuickTime file written before `ftyp` existed.
QUICKTIME_FIRST = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
TIMED_METADATA_ENTRIES = {b"gpmd", b"camm", b"mebx"}
# Text tracks: DJI drones write their telemetry, GPS included, as subtitles.
SUBTITLE_HANDLERS = {"text", "sbtl", "subt", "clcp"}
SUBTITLE_ENTRIES = {b"tx3g", b"text", b"wvtt", b"stpp", b"c608"}
# Location blocks of timed-metadata tracks: their samples are zeroed, their tracks kept.
TIMED_METADATA_BLOCKS = {"gpmf", "camm", "quicktime-timed", "timed-metadata"}
# (subtitles that mention a location are zeroed too, and are then no longer found)
# The boxes a movie needs to play, the only ones the cleaner keeps (everything else becomes
# `free`: user data, metadata, vendor and unknown boxes; a player ignores what it does not
# know, and a location may hide in any of them). Each is walked or searched by the walker:
# under the file; in moov, trak, mdia, minf and stbl; in mvex, moof, traf and mfra.
TOP_KEPT = {b"ftyp", b"moov", b"mdat", b"moof", b"mfra", b"sidx", b"ssix", b"styp"}
STRUCTURE_KEPT = {
    b"mvhd", b"trak", b"mvex", b"iods", b"pssh", b"ctab",
    b"tkhd", b"mdia", b"edts", b"tref", b"trgr", b"load", b"imap", b"matt", b"clip", b"tapt",
    b"txas", b"mdhd", b"hdlr", b"minf", b"elng", b"vmhd", b"smhd", b"hmhd", b"nmhd", b"sthd",
    b"gmhd", b"dinf", b"stbl", b"stsd", b"stts", b"ctts", b"cslg", b"stss", b"stps", b"stsh",
    b"sdtp", b"stsc", b"stsz", b"stz2", b"stco", b"co64", b"sgpd", b"sbgp", b"subs", b"saiz",
    b"saio", b"padb", b"stdp",
}  # fmt: skip
FRAGMENT_KEPT = {
    b"mehd", b"trex", b"leva", b"mfhd", b"traf", b"pssh", b"tfhd", b"tfdt", b"trun", b"sbgp",
    b"sgpd", b"subs", b"saiz", b"saio", b"senc", b"sdtp", b"tfra", b"mfro",
}  # fmt: skip
PADDING = {b"free", b"skip", b"wide"}
SPHERICAL_UUID = bytes.fromhex("FFCC8263F8554A938814587A02521FDD")  # 360 video (no location)

_LOCATION_KEY = re.compile(r"(?i)location|gps|latitude|longitude|iso6709|\u00a9xyz")
_LOCATION_WORD = re.compile(rb"(?i)latitude|longitude|iso6709")


class VideoStructureError(Exception):
    """The file's boxes cannot be walked completely: where its locations are is not known."""


class _Malformed(Exception):
    pass


@dataclass(frozen=True)
class Box:
    type: bytes
    start: int  # offset of the box's first byte in the file
    size: int  # the whole box, header included
    header: int  # 8, 16 with a 64-bit size, 16 more for a uuid box's user type
    user_type: bytes | None = None

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def payload(self) -> int:
        return self.start + self.header

    @property
    def payload_size(self) -> int:
        return self.size - self.header

    @property
    def name(self) -> str:
        return _name(self.type)

    @property
    def large(self) -> bool:
        """Whether the size is written in 64 bits (after the type)."""
        return self.header - (16 if self.user_type is not None else 0) == 16


@dataclass(frozen=True)
class Region:
    """Bytes the cleaner overwrites: a box to turn into `free` with its payload zeroed, or the
    samples of a timed-metadata (or location-bearing text) track to zero."""

    start: int
    length: int
    box: Box | None  # None: sample bytes
    what: str


@dataclass
class _Track:
    number: int
    handler: str = ""
    entries: list[bytes] = field(default_factory=list)  # sample entry types (codecs)
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    track_id: int | None = None  # from tkhd: how a fragment (traf) names its track
    tables: dict[bytes, Box] = field(default_factory=dict)  # stsz, stz2, stsc, stco, co64
    mebx_keys: dict[int, str] = field(default_factory=dict)
    # (offset, size) of each sample in movie fragments, for timed-metadata and text tracks
    fragment_samples: list[tuple[int, int]] = field(default_factory=list)

    @property
    def timed_metadata(self) -> bool:
        return self.handler == "meta" or bool(TIMED_METADATA_ENTRIES & set(self.entries))

    @property
    def subtitles(self) -> bool:
        return self.handler in SUBTITLE_HANDLERS or bool(SUBTITLE_ENTRIES & set(self.entries))


@dataclass(kw_only=True)
class _Result(Findings):
    tools: list[str] = field(default_factory=lambda: [TOOL])
    blocks: set[str] = field(default_factory=set)
    location_blocks: set[str] = field(default_factory=set)
    incomplete: bool = False  # something was not read: locations cannot be ruled out

    def unread(self, message: str) -> None:
        """Metadata left unread: a note (the file may be fine), and no claim of no location."""
        self.note(message)
        self.incomplete = True


def characterize_video(path: Path) -> Characterization:
    """Characterize one MP4/QuickTime/3GP file. Never raises for a bad file: problems go into
    the result. `locations` have `source` empty (the caller knows the file's path in the bag)."""
    path = Path(path)
    result = _Result(path=path)
    try:
        with path.open("rb") as fp:
            walker = _Walker(fp, path.stat().st_size, result, read_samples=True)
            walker.walk()
            walker.describe()
    except Exception as exc:  # a bug or an unforeseen value: do not claim the file is clean
        result.fail(f"could not be read: {type(exc).__name__}")
        result.incomplete = True
    unique: list[GeoLocation] = []
    for location in result.locations:
        if location not in unique:
            unique.append(location)
    result.locations = unique
    props = result.props
    props["metadata_blocks"] = sorted(result.blocks)
    props["location_blocks"] = sorted(result.location_blocks)
    props["has_location"] = bool(unique or result.location_blocks or result.incomplete)
    return result.build()


def is_video(path: Path) -> bool:
    """Whether the file is an ISO BMFF/QuickTime movie by its first box (not by its name): an
    `ftyp` whose brands are not those of a picture (HEIF, AVIF, Canon raw), or a box QuickTime
    files may start with."""
    try:
        with Path(path).open("rb") as fp:
            head = fp.read(64)
    except OSError:
        return False
    return video_signature(head)


def video_signature(head: bytes) -> bool:
    if len(head) < 8:
        return False
    size, kind = struct.unpack_from(">I4s", head)
    if kind == b"ftyp":
        if not 16 <= size <= 4096 or len(head) < 12:
            return False
        brands = {head[8:12]} | {
            head[offset : offset + 4] for offset in range(16, min(size, len(head)) - 3, 4)
        }
        return head[8:12] not in IMAGE_BRANDS and not (brands & {b"mif1", b"msf1"})
    return kind in QUICKTIME_FIRST and (size in (0, 1) or size >= 8)


def location_regions(path: Path) -> list[Region]:
    """What the cleaner overwrites: every box a movie does not need to play (user data,
    metadata, XMP, vendor and unknown boxes, padding), outermost only, the samples of every
    timed-metadata track, and the bytes of `mdat` no track's samples occupy. Raises
    VideoStructureError when the file cannot be walked completely (a box that overruns its
    parent, a truncated file, sample tables that do not add up, a fragment of an unknown
    track) or when a box the movie needs holds a location."""
    result = _Result(path=Path(path))
    with Path(path).open("rb") as fp:
        walker = _Walker(fp, Path(path).stat().st_size, result, read_samples=False)
        walker.walk()
    if result.problems or walker.structure_incomplete:
        raise VideoStructureError("; ".join(result.problems + result.notes) or "not walked")
    if walker.unremovable:
        where = ", ".join(sorted(set(walker.unremovable)))
        raise VideoStructureError(f"a location in boxes the movie needs to play ({where})")
    unique: dict[tuple[int, int], Region] = {}
    for region in walker.regions:
        if region.box is not None:
            unique.setdefault((region.start, region.length), region)  # the first, finer name
    boxes = sorted(unique.values(), key=lambda r: (r.start, -r.length))
    outermost: list[Region] = []
    for region in boxes:
        if outermost and region.start + region.length <= outermost[-1].start + outermost[-1].length:
            continue  # inside a box that is stripped whole
        outermost.append(region)
    return outermost + [r for r in walker.regions if r.box is None]


# ---------------------------------------------------------------------------------------------
# The walker


class _Walker:
    def __init__(self, fp: BinaryIO, size: int, result: _Result, *, read_samples: bool) -> None:
        self.fp = fp
        self.size = size
        self.result = result
        self.read_samples = read_samples
        self.regions: list[Region] = []
        self.tracks: list[_Track] = []
        self.boxes = 0
        self.metadata_read = 0
        self.samples_read = 0
        self.structure_incomplete = False  # regions may be missing: the cleaner must refuse
        self.unremovable: list[str] = []  # kept boxes that hold a location: refused too
        self.seen_moov = False
        self.media: list[Box] = []  # every top-level mdat
        self.occupied: list[tuple[int, int]] = []  # (start, end) of samples of every track
        self.default_sizes: dict[int, int] = {}  # trex: default sample size by track id
        self.brand: str | None = None
        self.compatible: list[str] = []
        self.duration_s: float | None = None
        self.fragmented = False
        self.gpmf_fixes = 0
        self.camm_fixes = 0

    # -- reading --------------------------------------------------------------------------------

    def unwalkable(self, problem: str) -> None:
        """Part of the file could not be walked: a problem, and neither its locations nor the
        cleaner's regions can be complete."""
        self.result.fail(problem)
        self.result.incomplete = True
        self.structure_incomplete = True

    def read_at(self, offset: int, length: int, what: str) -> bytes:
        if offset + length > self.size:
            raise _Malformed(f"file ends inside {what}")
        self.fp.seek(offset)
        data = self.fp.read(length)
        if len(data) < length:
            raise _Malformed(f"file ends inside {what}")
        return data

    def payload(self, box: Box, where: str, *, needed: bool = False) -> bytes | None:
        """A box's payload, within the budgets; None (noted) when over them. `needed`: the box
        says where locations are (a sample table), so the cleaner cannot do without it; other
        boxes read here are stripped whole anyway."""
        size = box.payload_size
        if size > MAX_BOX_READ or self.metadata_read + size > MAX_METADATA_BYTES:
            self.result.unread(f"{where}: box '{box.name}' larger than the reading limit")
            self.structure_incomplete = self.structure_incomplete or needed
            return None
        self.metadata_read += size
        return self.read_at(box.payload, size, f"box '{box.name}'")

    def children(self, start: int, end: int, depth: int, where: str) -> Iterator[Box]:
        """The boxes between start and end, each checked against the file and its parent."""
        if depth > MAX_DEPTH:
            raise _Malformed(f"{where}: boxes nested deeper than {MAX_DEPTH}")
        position = start
        while position < end:
            left = end - position
            if left < 8:
                # QuickTime ends some user data lists with a 32-bit zero
                if self.read_at(position, left, where).strip(b"\x00"):
                    raise _Malformed(f"{where}: {left} stray bytes after the last box")
                return
            size, kind = struct.unpack(">I4s", self.read_at(position, 8, where))
            header = 8
            if size == 1:
                (size,) = struct.unpack(">Q", self.read_at(position + 8, 8, where))
                header = 16
            elif size == 0:
                size = left  # "to the end" of the file (or of the parent)
            user_type = None
            if kind == b"uuid":
                user_type = self.read_at(position + header, 16, where)
                header += 16
            if size < header:
                raise _Malformed(f"{where}: box '{_name(kind)}' has an impossible size")
            if size > left:
                parent = "the file" if depth == 0 else "its parent"
                truncated = " (truncated file)" if position + size > self.size else ""
                raise _Malformed(
                    f"{where}: box '{_name(kind)}' extends past the end of {parent}{truncated}"
                )
            self.boxes += 1
            if self.boxes > MAX_BOXES:
                raise _Malformed(f"more than {MAX_BOXES} boxes")
            yield Box(kind, position, size, header, user_type)
            position += size

    def inside(self, box: Box, where: str, depth: int, handle: Callable[[Box, int], None]) -> None:
        """Walk one container; a malformed box ends that container, not the file."""
        try:
            for child in self.children(box.payload, box.end, depth, where):
                handle(child, depth + 1)
        except _Malformed as exc:
            self.unwalkable(str(exc))

    # -- the file -------------------------------------------------------------------------------

    def walk(self) -> None:
        first = True
        try:
            for box in self.children(0, self.size, 0, "file"):
                if first and box.type != b"ftyp" and box.type not in QUICKTIME_FIRST:
                    raise _Malformed(f"not an MP4/QuickTime file (starts with '{box.name}')")
                first = False
                if box.type == b"ftyp":
                    self.ftyp(box)
                elif box.type == b"moov":
                    self.seen_moov = True
                    self.inside(box, "moov", 1, lambda b, d: self.moov_child(b, d, "moov"))
                elif box.type == b"mdat":
                    self.media.append(box)
                elif box.type == b"moof":
                    self.moof(box)
                elif box.type == b"mfra":
                    self.fragmented = True
                    self.inside(box, "mfra", 1, lambda b, d: self.fragment_child(b, d, "mfra"))
                elif box.type in TOP_KEPT:  # sidx, ssix, styp
                    self.fragmented = True
                    self.kept(box, "file")
                else:
                    self.other(box, 1, "file")
        except _Malformed as exc:
            self.unwalkable(str(exc))
        if first:
            self.result.fail("not an MP4/QuickTime file (no boxes)")
        elif not self.seen_moov and not self.result.problems:
            # media without an index: nothing is ruled out
            self.unwalkable("no movie box (moov): not a playable file")
        for track in self.tracks:
            self.samples(track)
        if not self.structure_incomplete:  # else where the samples lie is not known
            self.unoccupied()

    def ftyp(self, box: Box) -> None:
        data = self.payload(box, "ftyp") or b""
        self.kept(box, "file", data)
        if len(data) >= 8:
            self.brand = _fourcc(data[:4])
            self.compatible = [_fourcc(data[i : i + 4]) for i in range(8, len(data) - 3, 4)][:32]
            if data[:4] in IMAGE_BRANDS:  # a picture's GPS lives in items this does not read
                self.result.unread(f"a picture's container (brand {self.brand}), not a video")

    def moov_child(self, box: Box, depth: int, where: str) -> None:
        kind = box.type
        if kind == b"mvhd":
            self.duration_s = self.duration(box, where)
        elif kind == b"trak":
            track = _Track(len(self.tracks) + 1)
            self.tracks.append(track)
            here = f"{where}/trak[{track.number}]"
            self.inside(box, here, depth, lambda b, d: self.trak_child(track, b, d, here))
        elif kind == b"mvex":
            self.fragmented = True
            here = f"{where}/mvex"
            self.inside(box, here, depth, lambda b, d: self.fragment_child(b, d, here))
        elif kind in STRUCTURE_KEPT:
            self.kept(box, where)
        else:
            self.other(box, depth, where)

    def duration(self, box: Box, where: str) -> float | None:
        """Seconds, from a kept movie or media header (mvhd, mdhd)."""
        data = self.payload(box, where) or b""
        self.kept(box, where, data)
        timescale, duration = _timing(data)
        return round(duration / timescale, 3) if timescale else None

    def trak_child(self, track: _Track, box: Box, depth: int, where: str) -> None:
        kind = box.type
        if kind == b"tkhd":
            data = self.payload(box, where, needed=True) or b""
            self.kept(box, where, data)
            if len(data) >= 84:
                width, height = struct.unpack_from(">II", data, len(data) - 8)
                if width or height:
                    track.width, track.height = width >> 16, height >> 16
            if len(data) >= 24:
                (track.track_id,) = struct.unpack_from(">I", data, 20 if data[0] == 1 else 12)
        elif kind in (b"mdia", b"minf", b"stbl"):
            here = f"{where}/{box.name}"
            self.inside(box, here, depth, lambda b, d: self.trak_child(track, b, d, here))
        elif kind == b"mdhd":
            track.duration_s = self.duration(box, where)
        elif kind == b"hdlr" and where.endswith("/mdia"):
            data = self.payload(box, where, needed=True) or b""
            self.kept(box, where, data)
            if len(data) >= 12:
                track.handler = _fourcc(data[8:12])
        elif kind == b"stsd":
            self.sample_entries(track, box, depth, where)
        elif kind in (b"stsz", b"stz2", b"stsc", b"stco", b"co64"):
            track.tables[kind] = box
            self.kept(box, where)
        elif kind in STRUCTURE_KEPT:
            self.kept(box, where)
        else:
            self.other(box, depth, where)

    def sample_entries(self, track: _Track, box: Box, depth: int, where: str) -> None:
        here = f"{where}/stsd"
        if box.payload_size < 8:
            self.result.fail(f"{here}: too short")
            return
        try:
            for entry in self.children(box.payload + 8, box.end, depth, here):
                if len(track.entries) < 16:
                    track.entries.append(entry.type)
                if entry.type == b"mebx":
                    self.mebx_keys(track, entry, depth + 1, f"{here}/mebx")
        except _Malformed as exc:
            self.unwalkable(str(exc))

    def mebx_keys(self, track: _Track, entry: Box, depth: int, where: str) -> None:
        """Apple's timed-metadata sample entry: a key table of local ids and key names."""
        if entry.payload_size < 8:
            return
        for child in self.children(entry.payload + 8, entry.end, depth, where):
            if child.type != b"keys":
                continue
            for key in self.children(child.payload, child.end, depth + 1, f"{where}/keys"):
                data = self.payload(key, where) or b""
                local_id = struct.unpack(">I", key.type)[0]
                name = _mebx_key_name(data)
                if name is not None:
                    track.mebx_keys[local_id] = name

    # -- movie fragments ------------------------------------------------------------------------

    def fragment_child(self, box: Box, depth: int, where: str) -> None:
        """A child of mvex or mfra: the defaults of fragments (trex) and their index."""
        if box.type == b"trex":
            data = self.payload(box, where, needed=True) or b""
            self.kept(box, where, data)
            if len(data) >= 24:
                track_id, _entry, _duration, size = struct.unpack_from(">IIII", data, 4)
                self.default_sizes[track_id] = size
        elif box.type in FRAGMENT_KEPT:
            self.kept(box, where)
        else:
            self.other(box, depth, where)

    def moof(self, box: Box) -> None:
        """A movie fragment: its track fragments say where their samples lie; anything else in
        it (user data, metadata, uuid boxes) is read and stripped as elsewhere."""
        self.fragmented = True
        base = box.start  # the first traf's data starts here unless it says otherwise
        try:
            if not self.seen_moov:
                raise _Malformed("a movie fragment before the movie box")
            for child in self.children(box.payload, box.end, 1, "moof"):
                if child.type == b"traf":
                    base = self.traf(box, child, 2, "moof/traf", base)
                elif child.type in FRAGMENT_KEPT:
                    self.kept(child, "moof")
                else:
                    self.other(child, 2, "moof")
        except _Malformed as exc:
            self.unwalkable(str(exc))

    def traf(self, moof: Box, traf: Box, depth: int, where: str, base: int) -> int:
        """One track fragment: its runs of samples (ISO/IEC 14496-12, 8.8.7 and 8.8.8), from
        the base offset of its tfhd (explicit, the moof with default-base-is-moof, else `base`:
        the moof for the first traf, the end of the previous one's data after). Returns where
        its data ends."""
        header: bytes | None = None
        runs: list[bytes] = []
        for child in self.children(traf.payload, traf.end, depth, where):
            if child.type in (b"tfhd", b"trun"):
                data = self.payload(child, where, needed=True)
                if data is None:
                    raise _Malformed(f"{where}: '{child.name}' larger than the reading limit")
                self.kept(child, where, data)
                if child.type == b"tfhd":
                    header = data
                else:
                    runs.append(data)
            elif child.type in FRAGMENT_KEPT:
                self.kept(child, where)
            else:
                self.other(child, depth + 1, where)
        if header is None or len(header) < 8:
            raise _Malformed(f"{where}: no track fragment header")
        flags = int.from_bytes(header[1:4], "big")
        (track_id,) = struct.unpack_from(">I", header, 4)
        tracks = [t for t in self.tracks if t.track_id == track_id]
        if len(tracks) != 1:  # none, or two with one id: whose samples these are is not known
            raise _Malformed(f"{where}: a fragment of track {track_id}, not one track of the movie")
        track = tracks[0]
        optional = [(0x1, ">Q"), (0x2, ">I"), (0x8, ">I"), (0x10, ">I")]
        fields: dict[int, int] = {}
        position = 8
        for flag, fmt in optional:
            if flags & flag:
                if position + struct.calcsize(fmt) > len(header):
                    raise _Malformed(f"{where}: track fragment header too short")
                (fields[flag],) = struct.unpack_from(fmt, header, position)
                position += struct.calcsize(fmt)
        if 0x1 in fields:
            base = fields[0x1]
        elif flags & 0x20000:  # default-base-is-moof
            base = moof.start
        default_size = fields.get(0x10, self.default_sizes.get(track_id))
        end = base
        for run in runs:
            end = self.run(track, run, base, end, default_size, where)
        return end

    def run(
        self, track: _Track, data: bytes, base: int, after: int, default: int | None, where: str
    ) -> int:
        """One trun: its samples, from the data offset (or right after the previous run), each
        the size it gives or the default. Returns where the run ends."""
        if len(data) < 8:
            raise _Malformed(f"{where}: track run too short")
        flags = int.from_bytes(data[1:4], "big")
        (count,) = struct.unpack_from(">I", data, 4)
        position = 8
        start = after
        if flags & 0x1:
            if len(data) < 12:
                raise _Malformed(f"{where}: track run too short")
            start = base + struct.unpack_from(">i", data, 8)[0]
            position += 4
        position += 4 if flags & 0x4 else 0  # first sample's flags
        per_sample = [bool(flags & f) for f in (0x100, 0x200, 0x400, 0x800)]
        width = 4 * sum(per_sample)
        if count > MAX_SAMPLES or position + count * width > len(data):
            raise _Malformed(f"{where}: track run overruns its box")
        if per_sample[1]:
            values = struct.unpack_from(f">{count * sum(per_sample)}I", data, position)
            sizes: list[int] | None = list(values[int(per_sample[0]) :: sum(per_sample)])
            length = sum(sizes)
        elif default is not None:
            sizes, length = None, count * default
        else:
            raise _Malformed(f"{where}: samples without a size")
        if start < 0 or start + length > self.size:
            raise _Malformed(f"{where}: samples lie past the end of the file")
        self.occupied.append((start, start + length))
        if track.timed_metadata or track.subtitles:
            if len(track.fragment_samples) + count > MAX_SAMPLES:
                raise _Malformed(f"{where}: more than {MAX_SAMPLES} samples in a track")
            offset = start
            for size in sizes if sizes is not None else [default or 0] * count:
                track.fragment_samples.append((offset, size))
                offset += size
        return start + length

    # -- metadata boxes -------------------------------------------------------------------------

    def kept(self, box: Box, where: str, data: bytes | None = None) -> None:
        """A box the movie needs, kept as it is, searched all the same (a handler name, a data
        reference or a brand can carry text): a location in it cannot be cut out without
        breaking the movie, so the cleaner refuses the file."""
        if box.type == b"stsd" or box.payload_size > MAX_KEPT_SEARCH:
            return  # codec configuration (mebx key names say "location"); long tables
        if data is None:
            data = self.payload(box, where)
        if data is not None and self.search(data, f"{where}/{box.name}"):
            self.unremovable.append(f"{where}/{box.name}")

    def other(self, box: Box, depth: int, where: str) -> None:
        """A box a movie does not need to play: read for locations, then always stripped
        (except 360-video metadata, which players need and which says nothing about where:
        kept, and searched as kept boxes are)."""
        if box.type == b"uuid" and box.user_type == SPHERICAL_UUID:
            self.kept(box, where)
            return
        self.user_data(box, depth, where)
        if box.type in PADDING:
            self.neutralise(box, "padding")
        else:
            self.neutralise(box, box.name if box.type in (b"udta", b"meco") else "metadata")

    def user_data(self, box: Box, depth: int, where: str) -> None:
        """Read a metadata box (user data, QuickTime metadata, XMP, vendor boxes) for locations."""
        kind = box.type
        here = f"{where}/{box.name}"
        if kind in (b"udta", b"meco"):  # meco: MPEG-21 additional metadata, meta boxes
            self.result.blocks.add(box.name)
            self.inside(box, here, depth, lambda b, d: self.user_data(b, d, here))
        elif kind == b"meta":
            self.meta(box, depth, here)
        elif kind == b"\xa9xyz":
            self.result.blocks.add("quicktime-xyz")
            self.neutralise(box, "©xyz")
            data = self.payload(box, here)
            if data is not None:
                self.iso6709(_user_data_text(data), "©xyz", "quicktime-xyz")
        elif kind == b"loci":
            self.result.blocks.add("loci")
            self.neutralise(box, "loci")
            data = self.payload(box, here)
            if data is not None:
                self.loci(data)
        elif kind == b"XMP_" or (kind == b"uuid" and box.user_type == XMP_UUID):
            self.result.blocks.add("xmp")
            self.neutralise(box, "XMP")
            data = self.payload(box, here)
            if data is not None:
                self.xmp(data)
        elif kind == b"GPMF":
            self.result.blocks.add("gpmf")
            data = self.payload(box, here)
            if data is not None and self.gpmf(data):
                self.neutralise(box, "GPMF")
        elif kind in PADDING and box.payload_size > MAX_BOX_READ:
            return  # large padding: zeroed by the cleaner, not worth reading
        elif box.payload_size > MAX_BOX_READ:
            self.result.unread(f"{here}: box larger than the reading limit")
        else:
            data = self.payload(box, here)
            if data is not None:
                self.scan(data, box)

    def scan(self, data: bytes, box: Box) -> None:
        """A box of a kind not read here (vendor user data, `emsg`, padding left by an editor):
        searched, and stripped unless it is padding with nothing in it."""
        if self.search(data, f"box '{box.name}'") or box.type not in PADDING:
            self.neutralise(box, "metadata")

    def search(self, data: bytes, where: str) -> bool:
        """ISO 6709 text, XMP packets and location words in bytes not otherwise understood;
        True when there is any."""
        found = False
        for match in ISO6709_IN_TEXT.finditer(data.decode("latin-1")):
            found = True
            self.iso6709(match.group(0), where, "other")
        position = 0
        while (start := data.find(b"<x:xmpmeta", position)) >= 0:
            end = data.find(b"</x:xmpmeta>", start)
            stop = len(data) if end < 0 else end + len(b"</x:xmpmeta>")
            self.result.blocks.add("xmp")
            self.xmp(data[start:stop])
            found, position = True, stop
        if not found and _LOCATION_WORD.search(data):
            self.result.location_blocks.add("other")
            self.result.note(f"{where} mentions a location that could not be read")
            found = True
        return found

    def neutralise(self, box: Box, what: str) -> None:
        self.regions.append(Region(box.start, box.size, box, what))

    def meta(self, box: Box, depth: int, where: str) -> None:
        """QuickTime metadata (hdlr, keys, ilst) or iTunes-style (ilst items named by type), read
        for locations (the cleaner strips every such box whole)."""
        start = box.payload
        head = self.read_at(start, min(box.payload_size, 12), "meta")
        if head[:4] == b"\x00\x00\x00\x00":  # ISO's meta is a full box; QuickTime's is not
            start += 4
        keys: list[str] = []
        items: list[tuple[bytes, list[tuple[int, bytes]]]] = []
        handler = ""
        located = False
        try:
            for child in self.children(start, box.end, depth, where):
                if child.type == b"hdlr":
                    data = self.payload(child, where) or b""
                    handler = _fourcc(data[8:12]) if len(data) >= 12 else ""
                elif child.type == b"keys":
                    keys = _keys(self.payload(child, where) or b"")
                elif child.type == b"ilst":
                    for item in self.children(child.payload, child.end, depth + 1, where):
                        values = []
                        for data_box in self.children(item.payload, item.end, depth + 2, where):
                            if data_box.type in (b"data", b"name"):
                                payload = self.payload(data_box, where) or b""
                                values.append((_data_type(data_box.type, payload), payload))
                        items.append((item.type, values))
                elif child.type in (b"\xa9xyz", b"loci", b"XMP_", b"uuid", b"udta"):
                    self.user_data(child, depth + 1, where)
        except _Malformed as exc:
            self.result.unread(f"{where}: {exc}")
            self.result.location_blocks.add("quicktime-meta")
            located = True  # what could not be read may be a location
        self.result.blocks.add("quicktime-meta" if handler == "mdta" else "meta")
        for item_type, values in items:
            name = _item_name(item_type, values, keys if handler == "mdta" else None)
            for data_type, payload in values:
                if data_type < 0:
                    continue
                text = _text_value(data_type, payload[8:])
                parsed = text is not None and parse_iso6709(text.strip("\x00 \t\r\n"))
                if _LOCATION_KEY.search(name) or parsed:
                    located = True
                    self.result.location_blocks.add("quicktime-meta")
                    if "iso6709" in name.lower() or name == "©xyz" or parsed:
                        self.iso6709(text, "QuickTime metadata", "quicktime-meta")
        if located:
            self.neutralise(box, "meta")

    def iso6709(
        self, text: str | None, where: str, block: str, kind: str = "quicktime-iso6709"
    ) -> None:
        self.result.location_blocks.add(block)
        location = parse_iso6709((text or "").strip("\x00 \t\r\n"))
        if location is None:
            self.result.note(f"{where}: a location that is not in ISO 6709 form")
            return
        latitude, longitude, altitude = location
        self.result.locations.append(GeoLocation(latitude, longitude, altitude, kind=kind))

    def loci(self, data: bytes) -> None:
        """3GPP TS 26.244 location information: name, role, then 16.16 longitude, latitude and
        altitude."""
        self.result.location_blocks.add("loci")
        position = 6  # version and flags, language
        if len(data) > position + 1 and data[position : position + 2] in (b"\xfe\xff", b"\xff\xfe"):
            end = position + 2
            while end + 1 < len(data) and data[end : end + 2] != b"\x00\x00":
                end += 2
            position = end + 2
        else:
            end = data.find(b"\x00", position)
            position = end + 1 if end >= 0 else len(data)
        position += 1  # role
        if position + 12 > len(data):
            self.result.note("loci: too short for a location")
            return
        longitude, latitude, altitude = (
            value / 65536 for value in struct.unpack_from(">iii", data, position)
        )
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            self.result.note("loci: location out of range")
            return
        self.result.locations.append(GeoLocation(latitude, longitude, altitude, kind="mp4-loci"))

    def xmp(self, packet: bytes) -> None:
        locations, problems, located = xmp_packet_locations(packet)
        for problem in problems:
            self.result.note(problem)
        if located or locations:
            self.result.location_blocks.add("xmp")
        self.result.locations += locations

    # -- samples --------------------------------------------------------------------------------

    def samples(self, track: _Track) -> None:
        """Where the track's samples lie, in the movie and in its fragments: all of it is media
        data in use; the samples of timed-metadata and text tracks are read too."""
        try:
            sizes, chunks = self.sample_chunks(track)
            ends = list(accumulate(sizes, initial=0))
            for offset, first, count in chunks:
                end = offset + ends[first + count] - ends[first]
                if end > self.size:
                    raise _Malformed("samples lie past the end of the file")
                self.occupied.append((offset, end))
        except _Malformed as exc:
            self.unwalkable(f"trak[{track.number}]: {exc}")
            return
        if not (track.timed_metadata or track.subtitles):
            return
        samples = [
            (offset + ends[index] - ends[first], sizes[index])
            for offset, first, count in chunks
            for index in range(first, first + count)
        ] + track.fragment_samples
        if track.timed_metadata:
            self.timed_metadata(track, samples)
        else:
            self.subtitles(track, samples)

    def sample_chunks(self, track: _Track) -> tuple[list[int], list[tuple[int, int, int]]]:
        """Every sample's size, and each chunk as (offset, first sample, samples), from
        stsz/stz2, stsc and stco/co64."""
        sizes = _sample_sizes(self.table(track, b"stsz"), self.table(track, b"stz2"))
        offsets = _chunk_offsets(self.table(track, b"stco"), self.table(track, b"co64"))
        stsc = self.table(track, b"stsc")
        if not sizes:
            if sizes is None and offsets:
                raise _Malformed("no sample size table")
            return [], []  # no samples in the movie (an empty track, or all in fragments)
        if offsets is None or stsc is None or len(stsc) < 8:
            raise _Malformed("sample tables incomplete")
        (count,) = struct.unpack_from(">I", stsc, 4)
        if 8 + 12 * count > len(stsc):
            raise _Malformed("sample-to-chunk table overruns its box")
        runs = [struct.unpack_from(">II", stsc, 8 + 12 * i) for i in range(count)]
        chunks: list[tuple[int, int, int]] = []
        sample = 0
        for index, (first, per_chunk) in enumerate(runs):
            last = runs[index + 1][0] - 1 if index + 1 < len(runs) else len(offsets)
            if first < 1 or last > len(offsets) or last < first - 1:
                raise _Malformed("sample-to-chunk table names chunks that do not exist")
            for chunk in range(first, last + 1):
                taken = min(per_chunk, len(sizes) - sample)
                chunks.append((offsets[chunk - 1], sample, taken))
                sample += taken
                if sample == len(sizes):
                    return sizes, chunks
        raise _Malformed("sample tables describe fewer samples than they count")

    def table(self, track: _Track, kind: bytes) -> bytes | None:
        box = track.tables.get(kind)
        if box is None:
            return None
        data = self.payload(box, f"trak[{track.number}]", needed=True)
        if data is None:
            raise _Malformed(f"sample table '{box.name}' larger than the reading limit")
        return data

    def unoccupied(self) -> None:
        """The bytes of every mdat that no track's samples occupy (a second mdat, a tail after
        the last sample, gaps): nothing plays them, so a location may hide there. Zeroed in
        copies; searched at ingest, within the sample budget."""
        occupied = sorted(self.occupied)
        index = 0
        for media in sorted(self.media, key=lambda box: box.start):
            position = media.payload
            while position < media.end:
                while index < len(occupied) and occupied[index][1] <= position:
                    index += 1
                if index < len(occupied) and occupied[index][0] <= position:
                    position = occupied[index][1]  # in use up to there
                    continue
                stop = media.end if index == len(occupied) else min(occupied[index][0], media.end)
                self.regions.append(Region(position, stop - position, None, "unused media"))
                self.search_media(position, stop - position)
                position = stop

    def search_media(self, offset: int, length: int) -> None:
        if not self.read_samples:
            return
        if length > MAX_BOX_READ or self.samples_read + length > MAX_SAMPLE_BYTES:
            self.result.unread("media data no track uses: beyond the reading limit")
            return
        self.samples_read += length
        self.search(self.read_at(offset, length, "media data"), "media data no track uses")

    # -- timed metadata -------------------------------------------------------------------------

    def timed_metadata(self, track: _Track, samples: list[tuple[int, int]]) -> None:
        kind = next((e for e in track.entries if e in TIMED_METADATA_ENTRIES), None)
        block = {b"gpmd": "gpmf", b"camm": "camm", b"mebx": "quicktime-timed"}.get(
            kind or b"", "timed-metadata"
        )
        self.result.blocks.add(block)
        for offset, length in samples:
            if length:
                self.regions.append(Region(offset, length, None, f"{block} samples"))
        if kind is None:
            # Samples of a kind not understood here: nothing rules a location out.
            self.result.location_blocks.add(block)
            return
        if kind == b"mebx" and any(_LOCATION_KEY.search(k) for k in track.mebx_keys.values()):
            self.result.location_blocks.add(block)
        if not self.read_samples:
            return
        for offset, length in samples:
            if self.samples_read + length > MAX_SAMPLE_BYTES:
                self.result.unread(f"trak[{track.number}]: samples beyond the reading limit")
                self.result.location_blocks.add(block)
                return
            self.samples_read += length
            data = self.read_at(offset, length, "a sample")
            if kind == b"gpmd":
                self.gpmf(data)
            elif kind == b"camm":
                self.camm(data)
            else:
                self.mebx_sample(track, data)
        if kind == b"gpmd":
            self.result.props["gpmf_fixes"] = self.gpmf_fixes
        elif kind == b"camm":
            self.result.props["camm_fixes"] = self.camm_fixes

    def subtitles(self, track: _Track, samples: list[tuple[int, int]]) -> None:
        """Text tracks are read even for the cleaner (bounded): those that mention a location
        are zeroed, others (captions) kept."""
        self.result.blocks.add("subtitles")
        located = False
        for offset, length in samples:
            if self.samples_read + length > MAX_SAMPLE_BYTES:
                self.result.unread(f"trak[{track.number}]: samples beyond the reading limit")
                located = True
                break
            self.samples_read += length
            located = self.subtitle(self.read_at(offset, length, "a sample")) or located
        if located:
            self.result.location_blocks.add("subtitles")
            for offset, length in samples:
                if length:
                    self.regions.append(Region(offset, length, None, "subtitle samples"))

    def subtitle(self, data: bytes) -> bool:
        text = data.decode("utf-8", "replace")
        position = subtitle_position(text)
        if position is None:
            return bool(ISO6709_IN_TEXT.search(text) or _LOCATION_WORD.search(data))
        first = not any(loc.kind == "subtitle-gps" for loc in self.result.locations)
        if first and plausible(*position):
            self.result.locations.append(GeoLocation(*position, kind="subtitle-gps"))
        return True

    def gpmf(self, data: bytes) -> bool:
        """GoPro's KLV telemetry; True when it holds GPS streams."""
        streams = Gpmf()
        streams.walk(data)
        if streams.malformed:
            self.result.note("GPMF: malformed KLV data")
        if streams.gps:
            self.result.location_blocks.add("gpmf")
        self.gpmf_fixes += streams.fixes
        if streams.first and not any(loc.kind == "gpmf-gps" for loc in self.result.locations):
            latitude, longitude, altitude = streams.first
            self.result.locations.append(
                GeoLocation(latitude, longitude, altitude, kind="gpmf-gps")
            )
        return streams.gps or streams.malformed

    def camm(self, data: bytes) -> None:
        """Google's Camera Motion Metadata: the first fix, and how many there are."""
        located, fix = camm_position(data)
        if located:
            self.result.location_blocks.add("camm")
        if fix is None:
            return
        self.camm_fixes += 1
        if not any(loc.kind == "camm-gps" for loc in self.result.locations):
            self.result.locations.append(GeoLocation(*fix, kind="camm-gps"))

    def mebx_sample(self, track: _Track, data: bytes) -> None:
        """A sample of Apple timed metadata: boxes typed by local key id, each a value."""
        position = 0
        while position + 8 <= len(data):
            size, local_id = struct.unpack_from(">II", data, position)
            if size < 8 or position + size > len(data):
                return
            name = track.mebx_keys.get(local_id, "")
            if "iso6709" in name.lower():
                if any(loc.kind == "quicktime-timed-iso6709" for loc in self.result.locations):
                    return  # the first position stands for the track, as for GPMF
                text = data[position + 8 : position + size].decode("utf-8", "replace")
                self.iso6709(
                    text, "QuickTime timed metadata", "quicktime-timed", "quicktime-timed-iso6709"
                )
                return
            position += size

    # -- properties -----------------------------------------------------------------------------

    def describe(self) -> None:
        props = self.result.props
        props["brand"] = self.brand
        props["compatible_brands"] = self.compatible
        props["duration_s"] = self.duration_s
        props["tracks"] = [
            {
                "handler": track.handler,
                "codecs": [_fourcc(e) for e in track.entries],
                "width": track.width,
                "height": track.height,
                "duration_s": track.duration_s,
            }
            for track in self.tracks
        ]
        props["track_kinds"] = sorted({t.handler for t in self.tracks if t.handler})
        props["codecs"] = sorted({_fourcc(e) for t in self.tracks for e in t.entries})
        video = next((t for t in self.tracks if t.handler == "vide" and t.width), None)
        if video:
            props["width"], props["height"] = video.width, video.height
        props["fragmented"] = self.fragmented


# ---------------------------------------------------------------------------------------------
# Small parsers


def _name(kind: bytes) -> str:
    text = kind.decode("latin-1")
    return text if text.isprintable() else kind.hex()


def _fourcc(data: bytes) -> str:
    return _name(data).strip()


def _timing(data: bytes) -> tuple[int, int]:
    """(timescale, duration) of an mvhd or mdhd payload."""
    if len(data) >= 32 and data[0] == 1:
        return struct.unpack_from(">IQ", data, 20)
    if len(data) >= 20:
        return struct.unpack_from(">II", data, 12)
    return 0, 0


def _user_data_text(data: bytes) -> str:
    """A QuickTime user data text (16-bit length, language, text) or a `data` box inside."""
    if len(data) >= 16 and data[4:8] == b"data":
        return data[16:].decode("utf-8", "replace")
    if len(data) >= 4:
        (length,) = struct.unpack_from(">H", data)
        return data[4 : 4 + length].decode("utf-8", "replace")
    return ""


def _keys(data: bytes) -> list[str]:
    """The names in a QuickTime metadata `keys` box, in order (ilst items count from 1)."""
    names: list[str] = []
    if len(data) < 8:
        return names
    (count,) = struct.unpack_from(">I", data, 4)
    position = 8
    for _ in range(count):
        if position + 8 > len(data):
            break
        (size,) = struct.unpack_from(">I", data, position)
        if size < 8 or position + size > len(data):
            break
        names.append(data[position + 8 : position + size].decode("utf-8", "replace"))
        position += size
    return names


def _mebx_key_name(data: bytes) -> str | None:
    """A `keyd` box (namespace and key name) inside a mebx key entry."""
    position = 0
    while position + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, position)
        if size < 8 or position + size > len(data):
            return None
        if kind == b"keyd" and size >= 12:
            return data[position + 12 : position + size].decode("utf-8", "replace")
        position += size
    return None


def _data_type(kind: bytes, payload: bytes) -> int:
    """The well-known type of an ilst `data` box; -1 for `name` (the key of a ---- item)."""
    if kind != b"data" or len(payload) < 8:
        return -1
    return int.from_bytes(payload[1:4], "big")


def _item_name(item_type: bytes, values: list[tuple[int, bytes]], keys: list[str] | None) -> str:
    if keys is not None:
        index = int.from_bytes(item_type, "big")
        return keys[index - 1] if 1 <= index <= len(keys) else f"key {index}"
    if item_type == b"----":
        names = [payload[4:].decode("utf-8", "replace") for t, payload in values if t == -1]
        return names[0] if names else "----"
    return _name(item_type)


def _text_value(data_type: int, value: bytes) -> str | None:
    if data_type in (0, 1, 4):
        return value.decode("utf-8", "replace")
    if data_type in (2, 5):
        return value.decode("utf-16-be", "replace")
    return None


def _sample_sizes(stsz: bytes | None, stz2: bytes | None) -> list[int] | None:
    if stsz is not None:
        if len(stsz) < 12:
            raise _Malformed("sample size table too short")
        size, count = struct.unpack_from(">II", stsz, 4)
        if count > MAX_SAMPLES:
            raise _Malformed(f"more than {MAX_SAMPLES} samples in a track")
        if size:
            return [size] * count
        if 12 + 4 * count > len(stsz):
            raise _Malformed("sample size table overruns its box")
        return list(struct.unpack_from(f">{count}I", stsz, 12))
    if stz2 is not None:
        if len(stz2) < 12:
            raise _Malformed("compact sample size table too short")
        field_size, count = stz2[7], struct.unpack_from(">I", stz2, 8)[0]
        if count > MAX_SAMPLES or field_size not in (4, 8, 16):
            raise _Malformed("compact sample size table unusable")
        if 12 + (count * field_size + 7) // 8 > len(stz2):
            raise _Malformed("compact sample size table overruns its box")
        if field_size == 16:
            return list(struct.unpack_from(f">{count}H", stz2, 12))
        if field_size == 8:
            return list(stz2[12 : 12 + count])
        return [(stz2[12 + i // 2] >> (4 if i % 2 == 0 else 0)) & 0xF for i in range(count)]
    return None


def _chunk_offsets(stco: bytes | None, co64: bytes | None) -> list[int] | None:
    for data, width in ((stco, 4), (co64, 8)):
        if data is None:
            continue
        if len(data) < 8:
            raise _Malformed("chunk offset table too short")
        (count,) = struct.unpack_from(">I", data, 4)
        if count > MAX_SAMPLES or 8 + width * count > len(data):
            raise _Malformed("chunk offset table overruns its box")
        return list(struct.unpack_from(f">{count}{'I' if width == 4 else 'Q'}", data, 8))
    return None
