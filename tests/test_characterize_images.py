"""Image characterization and location extraction.

Reference coordinates of the real photos were read with ExifTool 12.57 (Debian
libimage-exiftool-perl), an independent reader: `exiftool -n -GPSLatitude -GPSLongitude
-GPSAltitude -Make -Model -ImageWidth -ImageHeight -SubSecDateTimeOriginal FILE`, and the
Mapillary positions from the JSON that `exiftool -ImageDescription` prints. They are written out
here so that the tests do not need ExifTool. The generated files' expected values follow from the
values written; ExifTool read the same coordinates from them when these tests were written."""

from __future__ import annotations

import random
import re
import struct
import zlib

import pytest
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from arkhiv.ingest.characterize.images import characterize_image

TOLERANCE = 1e-6

# file: (latitude, longitude, capture time)  -- NIKON COOLPIX P6000, 640x480, no altitude
NIKON = {
    "DSCN0010.jpg": (43.4674483333333, 11.8851266666639, "2008-10-22T16:28:39"),
    "DSCN0012.jpg": (43.4671566666639, 11.8853949999972, "2008-10-22T16:29:49"),
    "DSCN0021.jpg": (43.4670816666639, 11.8845383333306, "2008-10-22T16:38:20"),
    "DSCN0025.jpg": (43.468365, 11.8816349999722, "2008-10-22T16:43:21"),
    "DSCN0027.jpg": (43.4684416666667, 11.881515, "2008-10-22T16:44:01"),
    "DSCN0029.jpg": (43.4682433333306, 11.8801716666389, "2008-10-22T16:46:53"),
    "DSCN0038.jpg": (43.4672549999972, 11.8792133333333, "2008-10-22T16:52:15"),
    "DSCN0040.jpg": (43.4660116666389, 11.8791116666389, "2008-10-22T16:55:37"),
    "DSCN0042.jpg": (43.464455, 11.8814783333333, "2008-10-22T17:00:07"),
}
# OpenSfM's Berlin sequence (iPhone 4S via Mapillary): EXIF GPS, and the Mapillary JSON
# position, which differs slightly, in ImageDescription, the IPTC caption and a second XMP
# packet (in an APP14 segment, which ExifTool reports as "Unknown APP14 segment").
BERLIN = {
    "01.jpg": ((52.5189166666667, 13.4002944444444, 27.0), (52.518918, 13.400295, 27.0)),
    "02.jpg": ((52.518925, 13.4003888888889, 30.0), (52.518925, 13.400387, 30.0)),
    "03.jpg": ((52.5190472222222, 13.4004472222222, 39.0), (52.519047, 13.400445, 39.0)),
}


def assert_location(location, latitude, longitude, altitude=None, kind="exif-gps"):
    assert location.kind == kind
    assert location.source == ""
    assert location.latitude == pytest.approx(latitude, abs=TOLERANCE)
    assert location.longitude == pytest.approx(longitude, abs=TOLERANCE)
    if altitude is None:
        assert location.altitude is None
    else:
        assert location.altitude == pytest.approx(altitude, abs=TOLERANCE)


# --------------------------------------------------------------------------------------------
# Real photographs


@pytest.mark.parametrize("name", sorted(NIKON))
def test_nikon_gps_photos(corpora, name):
    latitude, longitude, captured = NIKON[name]
    result = characterize_image(corpora / "photos-exif" / name)
    assert result.valid is True, result.problems
    props = result.properties
    assert (props["format"], props["width"], props["height"]) == ("JPEG", 640, 480)
    assert (props["camera_make"], props["camera_model"]) == ("NIKON", "COOLPIX P6000")
    assert props["capture_time"] == captured
    assert props["has_location"] is True
    assert props["location_blocks"] == ["exif"]
    assert props["metadata_blocks"] == ["exif", "xmp"]
    assert len(result.locations) == 1
    assert_location(result.locations[0], latitude, longitude)


def test_nikon_exposure_details(corpora):
    props = characterize_image(corpora / "photos-exif" / "DSCN0010.jpg").properties
    assert props["focal_length_mm"] == pytest.approx(24.0)
    assert props["focal_length_35mm"] == 112
    assert props["f_number"] == pytest.approx(5.9)
    assert props["exposure_time_s"] == pytest.approx(1 / 75)
    assert props["iso"] == 64
    assert props["orientation"] == 1
    assert props["software"] == "Nikon Transfer 1.1 W"
    assert (props["mode"], props["bit_depth"], props["frames"]) == ("RGB", 8, 1)
    assert props["icc_profile"] is False
    assert props["decode_check"] == "jpeg-dct-scaled"


def test_iphone_heic(corpora):
    result = characterize_image(corpora / "photos-exif" / "IMG_5195.HEIC")
    assert result.valid is True, result.problems
    props = result.properties
    assert (props["format"], props["width"], props["height"]) == ("HEIF", 2566, 3313)
    assert (props["camera_make"], props["camera_model"]) == ("Apple", "iPhone 11 Pro Max")
    assert props["lens"] == "iPhone 11 Pro Max back triple camera 4.25mm f/1.8"
    assert props["capture_time"] == "2021-04-11T15:47:53.054-05:00"
    assert props["focal_length_35mm"] == 26
    assert props["f_number"] == pytest.approx(1.8)
    assert props["iso"] == 32
    assert props["icc_profile"] is True
    assert props["metadata_blocks"] == ["exif", "icc", "xmp"]
    assert props["has_location"] is True
    assert props["decode_check"] == "full"
    [location] = result.locations
    assert_location(location, 39.0513444444444, -94.2887722222222, 260.5606383)


def test_nokia_capture_time_with_offset(corpora):
    result = characterize_image(corpora / "photos-exif" / "HMD_Nokia_8.3_5G.jpg")
    assert result.valid is True, result.problems
    props = result.properties
    assert (props["camera_make"], props["camera_model"]) == ("HMD Global", "Nokia 8.3 5G")
    assert (props["width"], props["height"]) == (4608, 1976)
    assert props["capture_time"] == "2022-08-14T14:12:31+03:00"
    [location] = result.locations
    assert_location(location, 60.1467055555556, 24.9067722222222)


def test_canon_without_gps(corpora):
    """Its GPS block holds only GPSVersionID: present, but says nothing about where."""
    result = characterize_image(corpora / "photos-exif" / "Canon_40D.jpg")
    assert result.valid is True, result.problems
    props = result.properties
    assert (props["camera_make"], props["camera_model"]) == ("Canon", "Canon EOS 40D")
    assert (props["width"], props["height"]) == (100, 68)
    assert props["capture_time"] == "2008-05-30T15:56:01.00"
    assert props["software"] == "GIMP 2.4.5"
    assert props["icc_profile"] is True
    assert result.locations == []
    assert props["has_location"] is False
    assert props["location_blocks"] == []


@pytest.mark.parametrize("name", sorted(BERLIN))
def test_berlin_every_location(corpora, name):
    exif_position, mapillary_position = BERLIN[name]
    path = corpora / "photogrammetry" / "opensfm-berlin" / "images" / name
    result = characterize_image(path)
    assert result.valid is True, result.problems
    props = result.properties
    assert (props["width"], props["height"]) == (3264, 2448)
    assert props["lens"] == "iPhone 4S back camera 4.28mm f/2.4"
    assert "camera_make" not in props  # this uploader wrote no Make/Model
    assert props["metadata_blocks"] == ["exif", "icc", "iptc", "xmp"]
    # the position is in the GPS block, ImageDescription, the IPTC caption and the second XMP
    assert props["location_blocks"] == ["exif", "iptc", "xmp"]
    kinds = {location.kind: location for location in result.locations}
    assert sorted(kinds) == ["exif-gps", "mapillary-json"]
    assert_location(kinds["exif-gps"], *exif_position)
    assert_location(kinds["mapillary-json"], *mapillary_position, kind="mapillary-json")


# --------------------------------------------------------------------------------------------
# Generated files


def pixels(size=(32, 24), seed=0) -> Image.Image:
    data = random.Random(seed).randbytes(size[0] * size[1] * 3)
    return Image.frombytes("RGB", size, data)


def southern_western_exif() -> Image.Exif:
    """33°51'35.9"S 70°39'12.34"W, 61.5 m below sea level, written with Pillow's Exif API."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "TestMake"
    exif[ExifTags.Base.Model] = "TestModel"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "S"
    gps[ExifTags.GPS.GPSLatitude] = (IFDRational(33), IFDRational(51), IFDRational(359, 10))
    gps[ExifTags.GPS.GPSLongitudeRef] = "W"
    gps[ExifTags.GPS.GPSLongitude] = (IFDRational(70), IFDRational(39), IFDRational(1234, 100))
    gps[ExifTags.GPS.GPSAltitudeRef] = b"\x01"
    gps[ExifTags.GPS.GPSAltitude] = IFDRational(123, 2)
    return exif


SOUTH_WEST = (-(33 + 51 / 60 + 35.9 / 3600), -(70 + 39 / 60 + 12.34 / 3600), -61.5)


@pytest.mark.parametrize(
    ("save_format", "suffix", "expected_format"),
    [
        ("JPEG", "jpg", "JPEG"),
        ("PNG", "png", "PNG"),
        ("TIFF", "tif", "TIFF"),
        ("WEBP", "webp", "WEBP"),
        ("HEIF", "heic", "HEIF"),
    ],
)
def test_southern_western_gps_in_every_format(tmp_path, save_format, suffix, expected_format):
    path = tmp_path / f"south.{suffix}"
    pixels().save(path, save_format, exif=southern_western_exif().tobytes())
    result = characterize_image(path)
    assert result.valid is True, result.problems
    props = result.properties
    assert (props["format"], props["width"], props["height"]) == (expected_format, 32, 24)
    assert (props["camera_make"], props["camera_model"]) == ("TestMake", "TestModel")
    assert props["has_location"] is True
    assert "exif" in props["metadata_blocks"]
    [location] = result.locations
    assert_location(location, *SOUTH_WEST)


def gps_ifd(entries: list[tuple[int, str, object]], at: int) -> bytes:
    """A big-endian GPS IFD built by hand, to be placed at offset `at` of its TIFF structure.
    Entries: (tag, "ascii" | "byte" | "rational", value); rationals as [(numerator,
    denominator), ...] so that zero denominators can be written."""
    data_offset = at + 2 + 12 * len(entries) + 4
    table, data = b"", b""
    for tag, kind, value in sorted(entries, key=lambda entry: entry[0]):
        if kind == "ascii":
            raw, field_type, count = value.encode() + b"\x00", 2, len(value) + 1
        elif kind == "byte":
            raw, field_type, count = bytes([value]), 1, 1
        else:
            raw = b"".join(struct.pack(">II", n, d) for n, d in value)
            field_type, count = 5, len(value)
        if len(raw) <= 4:
            inline = raw.ljust(4, b"\x00")
        else:
            inline = struct.pack(">I", data_offset + len(data))
            data += raw
        table += struct.pack(">HHI", tag, field_type, count) + inline
    return struct.pack(">H", len(entries)) + table + struct.pack(">I", 0) + data


def gps_exif_block(entries: list[tuple[int, str, object]]) -> bytes:
    """An EXIF block: IFD0 holding only the GPS pointer, then the GPS IFD."""
    gps_offset = 8 + 2 + 12 + 4
    ifd0 = struct.pack(">HHHII", 1, 0x8825, 4, 1, gps_offset) + struct.pack(">I", 0)
    tiff = b"MM\x00*" + struct.pack(">I", 8) + ifd0 + gps_ifd(entries, gps_offset)
    return b"Exif\x00\x00" + tiff


def tiff_pages(pages: int, gps_page: int, entries: list[tuple[int, str, object]]) -> bytes:
    """A multi-page 4x4 grayscale TIFF built by hand, with a GPS IFD on one page only (Pillow's
    page appender writes a wrong GPS offset on later pages)."""
    buffer = bytearray(b"MM\x00*\x00\x00\x00\x00")
    next_pointer = 4
    for page in range(pages):
        pixel_offset = len(buffer)
        buffer += bytes(range(page * 16, page * 16 + 16))
        tags = [(256, 3, 4), (257, 3, 4), (258, 3, 8), (259, 3, 1), (262, 3, 1)]
        tags += [(273, 4, pixel_offset), (277, 3, 1), (278, 3, 4), (279, 4, 16)]
        if page == gps_page:
            tags.append((0x8825, 4, len(buffer)))
            buffer += gps_ifd(entries, len(buffer))
        buffer[next_pointer : next_pointer + 4] = struct.pack(">I", len(buffer))
        buffer += struct.pack(">H", len(tags))
        for tag, field_type, value in tags:
            inline = struct.pack(">HH", value, 0) if field_type == 3 else struct.pack(">I", value)
            buffer += struct.pack(">HHI", tag, field_type, 1) + inline
        next_pointer = len(buffer)
        buffer += b"\x00\x00\x00\x00"
    return bytes(buffer)


PARIS = [
    (1, "ascii", "N"),
    (2, "rational", [(48, 1), (51, 1), (2999, 100)]),
    (3, "ascii", "E"),
    (4, "rational", [(2, 1), (17, 1), (4000, 100)]),
]
PARIS_DEGREES = (48 + 51 / 60 + 29.99 / 3600, 2 + 17 / 60 + 40 / 3600)


def test_gps_on_a_later_tiff_page(tmp_path):
    path = tmp_path / "pages.tif"
    path.write_bytes(tiff_pages(3, 1, PARIS))
    result = characterize_image(path)
    assert result.valid is True, result.problems
    assert (result.properties["format"], result.properties["frames"]) == ("TIFF", 3)
    assert result.properties["location_blocks"] == ["exif"]
    [location] = result.locations
    assert_location(location, *PARIS_DEGREES)


def test_zero_denominator_in_coordinate(tmp_path):
    path = tmp_path / "zero.jpg"
    exif = gps_exif_block(
        [
            (1, "ascii", "N"),
            (2, "rational", [(48, 1), (0, 0), (30, 0)]),
            (3, "ascii", "E"),
            (4, "rational", [(2, 1), (17, 1), (40, 1)]),
        ]
    )
    pixels().save(path, "JPEG", exif=exif)
    result = characterize_image(path)
    assert result.valid is True
    assert result.locations == []  # no trustworthy position ...
    assert result.properties["has_location"] is True  # ... but the file must still be stripped
    assert result.properties["location_blocks"] == ["exif"]
    assert any("zero denominator" in problem for problem in result.problems), result.problems


def test_zero_denominator_in_altitude_keeps_position(tmp_path):
    path = tmp_path / "zero-altitude.jpg"
    exif = gps_exif_block(
        [
            (1, "ascii", "S"),
            (2, "rational", [(12, 1), (30, 1), (0, 1)]),
            (3, "ascii", "W"),
            (4, "rational", [(45, 1), (15, 1), (36, 1)]),
            (5, "byte", 0),
            (6, "rational", [(100, 0)]),
        ]
    )
    pixels().save(path, "JPEG", exif=exif)
    result = characterize_image(path)
    [location] = result.locations
    assert_location(location, -12.5, -(45 + 15 / 60 + 36 / 3600))
    assert any("altitude" in problem for problem in result.problems), result.problems


def test_heif_second_exif_item(tmp_path):
    """pillow-heif's `info` keeps only the first Exif item of an image; GPS in a second one
    (ExifTool reads both) must still be found."""
    camera = Image.Exif()
    camera[ExifTags.Base.Make] = "First"
    second = {
        "type": "Exif",
        "content_type": "",
        "data": b"\x00\x00\x00\x06" + gps_exif_block(PARIS),
    }
    path = tmp_path / "two-exif.heic"
    pixels().save(path, "HEIF", exif=camera.tobytes(), metadata=[second])
    with Image.open(path) as im:
        assert ExifTags.IFD.GPSInfo not in im.getexif()  # why pillow-heif's info is not enough
    result = characterize_image(path)
    assert result.valid is True, result.problems
    assert result.properties["camera_make"] == "First"
    [location] = result.locations
    assert_location(location, *PARIS_DEGREES)


XMP_GPS = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:exif="http://ns.adobe.com/exif/1.0/"
    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
    exif:GPSLatitude="12,34.5678S"
    exif:GPSLongitude="98,7.654321W"
    exif:GPSAltitude="1234/10"
    exif:GPSAltitudeRef="1">
   <Iptc4xmpExt:LocationShown>
    <rdf:Bag>
     <rdf:li rdf:parseType="Resource">
      <exif:GPSLatitude>41,24,13.5N</exif:GPSLatitude>
      <exif:GPSLongitude>2,10,30E</exif:GPSLongitude>
     </rdf:li>
    </rdf:Bag>
   </Iptc4xmpExt:LocationShown>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""


def test_gps_only_in_xmp(tmp_path):
    path = tmp_path / "xmp.jpg"
    pixels().save(path, "JPEG", xmp=XMP_GPS.encode())
    result = characterize_image(path)
    assert result.valid is True, result.problems
    props = result.properties
    assert props["metadata_blocks"] == ["xmp"]
    assert props["location_blocks"] == ["xmp"]
    assert props["has_location"] is True
    first, second = result.locations
    assert_location(first, -(12 + 34.5678 / 60), -(98 + 7.654321 / 60), -123.4, kind="xmp-gps")
    assert_location(second, 41 + 24 / 60 + 13.5 / 3600, 2 + 10 / 60 + 30 / 3600, kind="xmp-gps")


def test_drone_position_in_xmp(tmp_path):
    """DJI drones write decimal degrees in their own schema (misspelling "Longtitude")."""
    packet = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        'xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/" '
        'drone-dji:GpsLatitude="+36.2024419" drone-dji:GpsLongtitude="-121.8051021" '
        'drone-dji:AbsoluteAltitude="+120.50"/></rdf:RDF></x:xmpmeta>'
    )
    path = tmp_path / "drone.jpg"
    pixels().save(path, "JPEG", xmp=packet.encode())
    [location] = characterize_image(path).locations
    assert_location(location, 36.2024419, -121.8051021, 120.5, kind="xmp-drone")


@pytest.mark.parametrize(
    "packet",
    [
        # well-formed, but the coordinate is junk
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        'xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="somewhere north" '
        'exif:GPSLongitude="12,30.0E"/></rdf:RDF></x:xmpmeta>',
        # not well-formed XML
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><exif:GPSLatitude>50,1.5N</exif:GPSLatitude',
    ],
)
def test_unparseable_xmp_location_is_still_flagged(tmp_path, packet):
    path = tmp_path / "bad-xmp.jpg"
    pixels().save(path, "JPEG", xmp=packet.encode())
    result = characterize_image(path)
    assert result.locations == []
    assert result.properties["has_location"] is True
    assert result.properties["location_blocks"] == ["xmp"]
    assert result.problems


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_png_xmp_after_image_data(tmp_path):
    """An iTXt chunk after IDAT: Pillow only sees it after decoding the whole image."""
    plain = tmp_path / "plain.png"
    pixels().save(plain)
    data = plain.read_bytes()
    itxt = png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + XMP_GPS.encode())
    path = tmp_path / "late-xmp.png"
    path.write_bytes(data[:-12] + itxt + data[-12:])  # before IEND
    with Image.open(path) as im:
        assert "xmp" not in im.info  # why the chunks are walked here
    result = characterize_image(path)
    assert result.valid is True, result.problems
    assert [location.kind for location in result.locations] == ["xmp-gps", "xmp-gps"]
    assert_location(
        result.locations[0], -(12 + 34.5678 / 60), -(98 + 7.654321 / 60), -123.4, kind="xmp-gps"
    )


def test_truncated_jpeg(tmp_path):
    whole = tmp_path / "whole.jpg"
    pixels((256, 256)).save(whole, "JPEG", quality=95)
    path = tmp_path / "truncated.jpg"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    result = characterize_image(path)
    assert result.valid is False
    assert "truncated" in result.problems[0]
    assert result.properties["width"] == 256  # the header is intact
    assert characterize_image(whole).valid is True


def test_truncated_photo_still_gives_its_location(corpora, tmp_path):
    original = corpora / "photos-exif" / "DSCN0010.jpg"
    path = tmp_path / "DSCN0010-truncated.jpg"
    with original.open("rb") as fp:
        path.write_bytes(fp.read(60_000))
    result = characterize_image(path)
    assert result.valid is False
    assert re.search(r"cannot be decoded.*truncated", result.problems[0])
    [location] = result.locations
    assert_location(location, *NIKON["DSCN0010.jpg"][:2])


def test_not_an_image_with_jpeg_signature(tmp_path):
    path = tmp_path / "junk.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe1" + b"\x00" * 100)
    result = characterize_image(path)
    assert result.valid is False
    assert result.properties["decode_check"] == "none"
    assert result.problems


def test_png_without_metadata(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("I;16", (40, 30), 1000).save(path)
    result = characterize_image(path)
    assert result.valid is True, result.problems
    assert result.problems == []
    assert result.locations == []
    props = result.properties
    assert (props["format"], props["width"], props["height"]) == ("PNG", 40, 30)
    assert props["bit_depth"] == 16
    assert props["frames"] == 1
    assert props["metadata_blocks"] == []
    assert props["location_blocks"] == []
    assert props["has_location"] is False
    assert props["icc_profile"] is False
    assert props["decode_check"] == "full"
    assert "capture_time" not in props


def test_large_image_is_checked_not_decoded(tmp_path):
    path = tmp_path / "large.png"
    pixels((64, 64)).save(path)
    result = characterize_image(path, max_decode_pixels=1000)
    assert result.properties["decode_check"] == "structure"
    assert result.valid is None
    damaged = tmp_path / "damaged.png"
    data = bytearray(path.read_bytes())
    data[60] ^= 0xFF  # inside IDAT: its CRC no longer matches
    damaged.write_bytes(bytes(data))
    assert characterize_image(damaged, max_decode_pixels=1000).valid is False


def test_decompression_bomb_still_gives_its_location(tmp_path):
    """Pillow refuses to open 400 megapixels; the GPS tags must be found anyway."""
    exif = gps_exif_block(PARIS)
    ihdr = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 0, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"eXIf", exif[6:])
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + png_chunk(b"IEND", b"")
    )
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    result = characterize_image(path)
    # 1.2 GB of pixels declared in a few hundred bytes: refused as a bomb, nothing decoded.
    assert result.properties["decode_check"] == "refused" and result.valid is False
    assert "ingest.max_decoded_ratio" in result.problems[0]
    assert (result.properties["width"], result.properties["height"]) == (20_000, 20_000)
    [location] = result.locations
    assert_location(location, *PARIS_DEGREES)
