"""Decoders of the positions cameras write into videos, for `videos`' box walker: ISO 6709 text
(Annex H, as QuickTime and ffmpeg write it), GoPro's GPMF telemetry (GPS5, GPS9), Google's
CAMM packets and DJI's telemetry subtitles. They take bytes or text and return numbers; where
the bytes lie in the file, and what the cleaner does with them, is the walker's business."""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

# ISO 6709 somewhere in text (vendor boxes, padding, media data no track points at)
ISO6709_IN_TEXT = re.compile(
    r"[+-]\d{2}(?:\d{2}){0,2}\.\d+[+-]\d{3}(?:\d{2}){0,2}\.\d+(?:[+-]\d+(?:\.\d*)?)?"
    r"(?:CRS[A-Za-z0-9_:.-]*)?/?"
)
_ISO6709 = re.compile(
    r"([+-])(\d{2}|\d{4}|\d{6})(\.\d*)?([+-])(\d{3}|\d{5}|\d{7})(\.\d*)?"
    r"([+-]\d+(?:\.\d*)?)?(?:CRS[A-Za-z0-9_:.-]*)?/?"
)
# DJI's subtitles: "[latitude: 22.543210] [longitude: 114.056789]" (some firmware spells
# "longtitude") or, older, "GPS(114.0568,22.5432,16)" (longitude first)
_DJI_LATITUDE_LONGITUDE = re.compile(
    r"(?i)latitude\s*[:=]\s*(-?\d+\.\d+)\W+(?:\w+\W+)??longt?itude\s*[:=]\s*(-?\d+\.\d+)"
)
_DJI_GPS = re.compile(r"GPS\s*\(\s*(-?\d+\.\d+)\s*,\s*(-?\d+\.\d+)")
_GPMF_TYPES = {
    b"b": "b", b"B": "B", b"c": "c", b"d": "d", b"f": "f", b"j": "q", b"J": "Q", b"l": "i",
    b"L": "I", b"s": "h", b"S": "H",
}  # fmt: skip


def parse_iso6709(text: str) -> tuple[float, float, float | None] | None:
    """ISO 6709 (Annex H) as cameras write it: "+DD.DD+DDD.DD+AAA.A/", with degrees, degrees
    and minutes, or degrees, minutes and seconds; altitude and CRS optional."""
    match = _ISO6709.fullmatch(text)
    if not match:
        return None
    lat_sign, lat_digits, lat_fraction, lon_sign, lon_digits, lon_fraction, altitude = (
        match.groups()
    )
    try:
        latitude = _sexagesimal(lat_sign, lat_digits, lat_fraction, 2)
        longitude = _sexagesimal(lon_sign, lon_digits, lon_fraction, 3)
    except ValueError:
        return None
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return None
    return latitude, longitude, float(altitude) if altitude else None


def _sexagesimal(sign: str, digits: str, fraction: str | None, width: int) -> float:
    tail = float("0" + fraction) if fraction and fraction != "." else 0.0
    degrees = int(digits[:width])
    rest = digits[width:]
    if not rest:
        value = degrees + tail
    elif len(rest) == 2:
        minutes = int(rest) + tail
        if minutes >= 60:
            raise ValueError("minutes")
        value = degrees + minutes / 60
    else:
        minutes, seconds = int(rest[:2]), int(rest[2:]) + tail
        if minutes >= 60 or seconds >= 60:
            raise ValueError("minutes or seconds")
        value = degrees + minutes / 60 + seconds / 3600
    return -value if sign == "-" else value


def plausible(latitude: float, longitude: float) -> bool:
    return (
        math.isfinite(latitude)
        and math.isfinite(longitude)
        and -90 <= latitude <= 90
        and -180 <= longitude <= 180
        and (latitude, longitude) != (0.0, 0.0)
    )


def camm_position(data: bytes) -> tuple[bool, tuple[float, float, float] | None]:
    """Google's Camera Motion Metadata, one little-endian packet: (whether it is a position
    packet, type 5 or 6; the position when the receiver had a fix and it is plausible)."""
    if len(data) < 4:
        return False, None
    (packet,) = struct.unpack_from("<H", data, 2)
    if packet == 5 and len(data) >= 28:
        latitude, longitude, altitude = struct.unpack_from("<ddd", data, 4)
        fix = 3
    elif packet == 6 and len(data) >= 36:
        fix, latitude, longitude = struct.unpack_from("<idd", data, 12)
        (altitude,) = struct.unpack_from("<f", data, 32)
    else:
        return False, None
    if fix < 2 or not plausible(latitude, longitude):
        return True, None
    return True, (latitude, longitude, float(altitude))


def subtitle_position(text: str) -> tuple[float, float] | None:
    """(latitude, longitude) in one of DJI's telemetry subtitles, plausible or not."""
    if match := _DJI_LATITUDE_LONGITUDE.search(text):
        return float(match[1]), float(match[2])
    if match := _DJI_GPS.search(text):
        return float(match[2]), float(match[1])
    return None


@dataclass
class Gpmf:
    """GoPro's KLV telemetry, walked for GPS streams: whether there are any, the number of
    fixes with a lock, and the first."""

    gps: bool = False
    fixes: int = 0
    first: tuple[float, float, float] | None = None
    malformed: bool = False

    def walk(self, data: bytes, depth: int = 0) -> None:
        scale: list[float] = []
        fix: int | None = None
        layout = b""
        position = 0
        while position + 8 <= len(data):
            key, kind, item_size, repeat = struct.unpack_from(">4scBH", data, position)
            if key == b"\x00\x00\x00\x00":
                return
            length = item_size * repeat
            body = data[position + 8 : position + 8 + length]
            if len(body) < length:
                self.malformed = True
                return
            position += 8 + (length + 3) // 4 * 4
            if kind == b"\x00":
                if depth < 8:
                    self.walk(body, depth + 1)
                continue
            if key == b"SCAL":
                scale = [float(v) for v in _gpmf_values(kind, item_size, body)]
            elif key == b"GPSF":
                values = _gpmf_values(kind, item_size, body)
                fix = int(values[0]) if values else None
            elif key == b"TYPE":
                layout = body.rstrip(b"\x00")
            elif key in (b"GPS5", b"GPS9", b"GPSU", b"GPSP"):
                self.gps = True
                if key == b"GPS5" and kind == b"l" and item_size == 20:
                    self.points(struct.iter_unpack(">5i", body), scale, fix, None)
                elif key == b"GPS9" and kind == b"?":
                    fmt = ">" + "".join(_GPMF_TYPES.get(bytes([c]), "?") for c in layout)
                    if "?" not in fmt and struct.calcsize(fmt) == item_size and len(layout) >= 9:
                        self.points(struct.iter_unpack(fmt, body), scale, fix, 8)

    def points(
        self, rows: Iterator[tuple], scale: list[float], fix: int | None, fix_column: int | None
    ) -> None:
        if not scale or any(s == 0 for s in scale[:3]):
            return
        factors = (scale * 3)[:3] if len(scale) == 1 else scale[:3]
        if len(factors) < 3:
            return
        for row in rows:
            row_fix = row[fix_column] if fix_column is not None else fix
            if row_fix is not None and row_fix < 2:
                continue  # no lock: the receiver repeats its last or a zero position
            latitude, longitude, altitude = (row[i] / factors[i] for i in range(3))
            if not plausible(latitude, longitude):
                continue
            self.fixes += 1
            if self.first is None:
                self.first = (latitude, longitude, altitude)


def _gpmf_values(kind: bytes, item_size: int, body: bytes) -> tuple:
    fmt = _GPMF_TYPES.get(kind)
    if fmt is None or fmt == "c":
        return ()
    width = struct.calcsize(fmt)
    count = len(body) // width
    return struct.unpack(f">{count}{fmt}", body[: count * width])
