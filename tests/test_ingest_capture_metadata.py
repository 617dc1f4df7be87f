"""Capture metadata (capture-metadata.json or Dublin Core in bag-info.txt) and Arkhiv's BagIt
profile. The examples come from docs/submission-format.md, so the documentation cannot drift."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import bagit
import bagit_profile
import pytest
from jsonschema import Draft202012Validator

from arkhiv.ingest import capture_metadata as cm
from arkhiv.ingest.capture_metadata import (
    BAG_INFO_FIELDS,
    METADATA_FILE,
    PROFILE_ID,
    SCHEMA_ID,
    CaptureMetadata,
    check_capture_document,
    load_profile,
    load_schema,
    metadata_from_bag_info,
    precise_location,
    public_metadata,
    read_capture_metadata,
    validate_profile,
)
from arkhiv.ingest.model import Check, Outcome

DOCS = Path(__file__).resolve().parent.parent / "docs" / "submission-format.md"


def _example(name: str) -> str:
    """The fenced block that follows `<!-- example: NAME -->` in the submission-format docs."""
    text = DOCS.read_text("utf-8")
    match = re.search(
        rf"<!-- example: {re.escape(name)} -->\s*```[a-z]*\n(.*?)\n```", text, re.DOTALL
    )
    assert match, f"no example {name!r} in {DOCS}"
    return match.group(1)


def _parse_bag_info(text: str) -> dict[str, list[str]]:
    labels: dict[str, list[str]] = {}
    for line in text.splitlines():
        label, _, value = line.partition(":")
        labels.setdefault(label.strip(), []).append(value.strip())
    return labels


@pytest.fixture
def example() -> dict[str, Any]:
    return json.loads(_example("capture-metadata.json"))


@pytest.fixture
def example_bag_info() -> dict[str, list[str]]:
    return _parse_bag_info(_example("bag-info.txt"))


def _failures(checks: list[Check]) -> list[str]:
    return [c.reason for c in checks if c.outcome == Outcome.FAIL]


def _write(bag: Path, document: Any) -> None:
    bag.mkdir(exist_ok=True)
    (bag / METADATA_FILE).write_text(json.dumps(document, indent=2), "utf-8")


def _leaf_paths(schema: dict[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    paths = set()
    for name, child in schema.get("properties", {}).items():
        if "properties" in child:
            paths |= _leaf_paths(child, (*prefix, name))
        else:
            paths.add((*prefix, name))
    return paths


# --- the schema and the model ----------------------------------------------------------------


def test_schema_is_valid_2020_12_and_documents_every_property():
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$id"] == SCHEMA_ID
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"

    def walk(node: dict[str, Any], where: str) -> None:
        for name, child in node.get("properties", {}).items():
            assert child.get("title") and child.get("description"), f"{where}{name}"
            walk(child, f"{where}{name}.")

    walk(schema, "")


def test_model_mirrors_the_schema():
    """Same fields, same required ones, same choices: the two cannot drift apart unseen."""

    def compare(node: dict[str, Any], model: type, where: str) -> None:
        fields = model.model_fields
        assert set(fields) == set(node["properties"]), where
        for name, child in node["properties"].items():
            field = fields[name]
            assert field.is_required() == (name in node.get("required", [])), f"{where}{name}"
            if "properties" in child:
                inner = next(
                    a
                    for a in getattr(field.annotation, "__args__", (field.annotation,))
                    if isinstance(a, type) and hasattr(a, "model_fields")
                )
                compare(child, inner, f"{where}{name}.")
            elif "enum" in child and name != "country":
                choices = next(
                    a
                    for a in getattr(field.annotation, "__args__", (field.annotation,))
                    if a is not type(None)
                )
                assert [c.value for c in choices] == child["enum"], f"{where}{name}"

    compare(load_schema(), CaptureMetadata, "")
    assert {"UA", "PL", "GB", "XK"} <= cm.COUNTRY_CODES
    assert len(cm.COUNTRY_CODES) == 250  # the 249 ISO 3166-1 codes and Kosovo


def test_python_patterns_are_the_schema_patterns():
    props = load_schema()["properties"]
    assert props["object"]["properties"]["date"]["properties"]["start"]["pattern"] == (
        cm.EDTF_PATTERN
    )
    assert props["object"]["properties"]["date"]["properties"]["end"]["pattern"] == cm.EDTF_PATTERN
    assert props["capture"]["properties"]["captured_at"]["pattern"] == cm.CAPTURED_AT_PATTERN
    assert props["contributor"]["properties"]["email"]["pattern"] == cm.EMAIL_PATTERN
    assert props["language"]["pattern"] == cm.LANGUAGE_PATTERN
    assert props["permission"]["properties"]["granted_on"]["pattern"] == cm.DATE_PATTERN


# --- the documented example --------------------------------------------------------------------


def test_documented_example_is_valid_and_complete(example):
    meta, checks = check_capture_document(example)
    assert meta is not None, _failures(checks)
    assert checks == []
    assert meta.object.title.startswith("Bell tower")
    # The example shows every field (license_text only belongs to "other").
    shown = {path for path in _leaf_paths(load_schema()) if cm._get(example, path) is not None}
    assert _leaf_paths(load_schema()) - shown == {("rights", "license_text")}


def test_model_dumps_back_to_a_valid_document(example):
    meta, _ = check_capture_document(example)
    again, checks = check_capture_document(meta.model_dump(mode="json", exclude_none=True))
    assert again == meta
    assert checks == []


def test_read_from_bag_dir_passes(tmp_path, example):
    _write(tmp_path, example)
    meta, checks = read_capture_metadata(tmp_path, {})
    assert meta is not None
    assert [(c.name, c.outcome) for c in checks] == [("capture-metadata.read", Outcome.PASS)]


# --- every problem at once ---------------------------------------------------------------------

REQUIRED = [
    ("schema_version",),
    ("object",),
    ("capture",),
    ("contributor",),
    ("rights",),
    ("permission",),
    ("object", "title"),
    ("object", "type"),
    ("object", "place_name"),
    ("object", "country"),
    ("capture", "mode"),
    ("capture", "captured_at"),
    ("contributor", "publish_as"),
    ("rights", "license"),
    ("permission", "statement"),
    ("permission", "granted_by"),
    ("object", "coordinates", "latitude"),
    ("object", "coordinates", "longitude"),
    ("object", "condition", "status"),
    ("capture", "app", "name"),
]


@pytest.mark.parametrize("path", REQUIRED, ids=".".join)
def test_each_required_field_missing_is_named(tmp_path, example, path):
    document = copy.deepcopy(example)
    holder = cm._get(document, path[:-1]) if len(path) > 1 else document
    del holder[path[-1]]
    _write(tmp_path, document)
    meta, checks = read_capture_metadata(tmp_path, {})
    assert meta is None
    assert _failures(checks) == [f"{METADATA_FILE}: {'.'.join(path)}: required"]
    assert all(c.name == "capture-metadata.schema" and c.path == METADATA_FILE for c in checks)


def test_all_missing_fields_are_listed_at_once(tmp_path):
    skeleton = {"schema_version": "1.0", "object": {}, "capture": {}, "contributor": {},
                "rights": {}, "permission": {}}  # fmt: skip
    _write(tmp_path, skeleton)
    meta, checks = read_capture_metadata(tmp_path, {})
    assert meta is None
    assert _failures(checks) == [
        f"{METADATA_FILE}: object.title: required",
        f"{METADATA_FILE}: object.type: required",
        f"{METADATA_FILE}: object.place_name: required",
        f"{METADATA_FILE}: object.country: required",
        f"{METADATA_FILE}: capture.mode: required",
        f"{METADATA_FILE}: capture.captured_at: required",
        f"{METADATA_FILE}: contributor: name or pseudonym is required",
        f"{METADATA_FILE}: contributor.publish_as: required",
        f"{METADATA_FILE}: rights.license: required",
        f"{METADATA_FILE}: permission.statement: required",
        f"{METADATA_FILE}: permission.granted_by: required",
    ]


def test_empty_document_names_every_section(tmp_path):
    _write(tmp_path, {})
    _, checks = read_capture_metadata(tmp_path, {})
    assert _failures(checks) == [
        f"{METADATA_FILE}: {name}: required"
        for name in ("schema_version", "object", "capture", "contributor", "rights", "permission")
    ]


def test_conditional_requirements(example):
    document = copy.deepcopy(example)
    document["object"]["type"] = "other"
    del document["object"]["type_detail"]
    document["contributor"]["publish_as"] = "name"
    del document["contributor"]["name"]
    document["rights"] = {"license": "other"}
    _, checks = check_capture_document(document)
    assert _failures(checks) == [
        f'{METADATA_FILE}: object.type_detail: required when type is "other"',
        f'{METADATA_FILE}: contributor.name: required when publish_as is "name"',
        f'{METADATA_FILE}: rights.license_text: required when license is "other"',
    ]


def test_unknown_and_mistyped_fields(example):
    document = copy.deepcopy(example)
    document["object"]["titel"] = "typo"
    document["capture"]["mode"] = "video"
    document["object"]["country"] = "UK"
    document["schema_version"] = "2.0"
    document["object"]["date"] = {}
    document["permission"]["granted_on"] = "2024-02-30"
    _, checks = check_capture_document(document)
    failures = _failures(checks)
    assert f'{METADATA_FILE}: schema_version: must be "1.0"' in failures
    assert f"{METADATA_FILE}: object.titel: not a field of this schema (misspelt?)" in failures
    assert any(
        f.startswith(f'{METADATA_FILE}: object.country: "UK" is not allowed') for f in failures
    )
    assert (
        f'{METADATA_FILE}: capture.mode: "video" is not allowed; use one of: photos, '
        "lidar-depth, point-cloud, mesh" in failures
    )
    assert any(f.startswith(f"{METADATA_FILE}: object.date: must not be empty") for f in failures)
    assert any(
        f.startswith(f'{METADATA_FILE}: permission.granted_on: "2024-02-30"') for f in failures
    )
    assert len(failures) == 6


def test_invalid_coordinates_are_reported_without_their_values(example):
    document = copy.deepcopy(example)
    document["object"]["coordinates"] = {
        "latitude": 91.123456,
        "longitude": -180.654321,
        "accuracy_m": -3,
        "altitude": "high",
    }
    meta, checks = check_capture_document(document)
    assert meta is None
    assert _failures(checks) == [
        f"{METADATA_FILE}: object.coordinates.latitude: must be at most 90",
        f"{METADATA_FILE}: object.coordinates.longitude: must be at least -180",
        f"{METADATA_FILE}: object.coordinates.altitude: must be a number",
        f"{METADATA_FILE}: object.coordinates.accuracy_m: must be at least 0",
    ]
    assert not any("91.12" in c.reason or "180.65" in c.reason for c in checks)


def test_coordinates_are_optional(example):
    document = copy.deepcopy(example)
    del document["object"]["coordinates"]
    meta, checks = check_capture_document(document)
    assert meta is not None and checks == []
    assert precise_location(meta) is None


def test_invalid_licence(example):
    document = copy.deepcopy(example)
    document["rights"]["license"] = "CC-BY-3.0"
    _, checks = check_capture_document(document)
    assert _failures(checks) == [
        f'{METADATA_FILE}: rights.license: "CC-BY-3.0" is not allowed; use one of: CC0-1.0, '
        "CC-BY-4.0, CC-BY-SA-4.0, CC-BY-NC-4.0, CC-BY-NC-SA-4.0, other"
    ]
    document["rights"] = {"license": "other", "license_text": "Free for non-military use."}
    meta, checks = check_capture_document(document)
    assert meta is not None and meta.rights.license_text == "Free for non-military use."


def test_period_ending_before_it_starts(example):
    document = copy.deepcopy(example)
    document["object"]["date"] = {"start": "1799", "end": "1780-05"}
    meta, checks = check_capture_document(document)
    assert meta is not None  # readable, but the package is refused
    assert _failures(checks) == [f"{METADATA_FILE}: object.date.end: is before start"]
    document["object"]["date"] = {"start": "17XX", "end": "1720~"}
    assert check_capture_document(document)[1] == []


def test_future_capture_and_null_island_are_warnings(example):
    document = copy.deepcopy(example)
    document["capture"]["captured_at"] = "2999-01-01"
    document["object"]["coordinates"] = {"latitude": 0, "longitude": 0}
    meta, checks = check_capture_document(document)
    assert meta is not None and _failures(checks) == []
    warned = {c.reason.split(": ")[1] for c in checks if c.outcome == Outcome.WARN}
    assert warned == {"capture.captured_at", "object.coordinates"}


# --- unreadable files ------------------------------------------------------------------------


def test_invalid_json_gives_line_and_column(tmp_path):
    tmp_path.joinpath(METADATA_FILE).write_text(
        '{\n  "schema_version": "1.0",\n  "object": {"title": "x"}\n  "capture": {}\n}\n'
    )
    meta, checks = read_capture_metadata(tmp_path, {})
    assert meta is None
    assert _failures(checks) == [f"{METADATA_FILE}: line 4, column 3: Expecting ',' delimiter"]
    assert checks[0].name == "capture-metadata.file"


def test_not_utf8_gives_line_and_column(tmp_path):
    tmp_path.joinpath(METADATA_FILE).write_bytes(b'{\n  "object": {"title": "Cerkva \xe9"}\n}')
    _, checks = read_capture_metadata(tmp_path, {})
    assert _failures(checks) == [
        f"{METADATA_FILE}: line 2, column 31: not UTF-8 text; save it as UTF-8"
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"a": 1, "a": 2}', "the key 'a' appears twice in one object"),
        ('{"a": NaN}', "NaN is not a JSON number"),
        ("", "line 1, column 1: Expecting value"),
    ],
)
def test_other_unreadable_json(tmp_path, content, expected):
    tmp_path.joinpath(METADATA_FILE).write_text(content)
    _, checks = read_capture_metadata(tmp_path, {})
    assert _failures(checks) == [f"{METADATA_FILE}: {expected}"]


def test_oversized_file_is_refused_without_reading_it_all(tmp_path, example):
    text = json.dumps(example)
    tmp_path.joinpath(METADATA_FILE).write_text(text + " " * cm.MAX_METADATA_BYTES)
    _, checks = read_capture_metadata(tmp_path, {})
    assert _failures(checks)[0].startswith(f"{METADATA_FILE}: is larger than 1024 KiB")


def test_utf8_bom_is_accepted(tmp_path, example):
    tmp_path.joinpath(METADATA_FILE).write_bytes(b"\xef\xbb\xbf" + json.dumps(example).encode())
    meta, _ = read_capture_metadata(tmp_path, {})
    assert meta is not None


def test_symlinked_metadata_is_refused(tmp_path, example):
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps(example))
    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / METADATA_FILE).symlink_to(outside)
    _, checks = read_capture_metadata(bag, {})
    assert _failures(checks) == [
        f"{METADATA_FILE}: is a symbolic link; put the file itself in the bag"
    ]


# --- Dublin Core in bag-info.txt -----------------------------------------------------------------


def test_documented_bag_info_maps_to_the_same_model_as_the_json(
    tmp_path, example, example_bag_info
):
    from_json, _ = check_capture_document(example)
    from_dc, checks = read_capture_metadata(tmp_path, example_bag_info)
    assert from_dc is not None, _failures(checks)
    assert from_dc == from_json
    assert [c.name for c in checks] == ["capture-metadata.read"]


def test_every_field_has_a_bag_info_label_documented_and_in_the_profile():
    labels = {f.label for f in BAG_INFO_FIELDS}
    leaves = _leaf_paths(load_schema()) - {("schema_version",), ("rights", "license_text")}
    assert {f.path for f in BAG_INFO_FIELDS} == leaves
    docs = DOCS.read_text("utf-8")
    profile_labels = set(load_profile()["Bag-Info"])
    for label in labels | {cm.FALLBACK_NAME_LABEL}:
        assert f"`{label}`" in docs, label
        assert label in profile_labels, label
    # As the docs say: every DC-/Arkhiv- label may appear once, except DC-Description.
    for label, rule in load_profile()["Bag-Info"].items():
        if label.startswith(("DC-", "Arkhiv-")):
            assert rule["repeatable"] is (label == "DC-Description"), label


def test_profile_value_lists_match_the_schema():
    profile = load_profile()["Bag-Info"]
    schema = load_schema()
    for field in BAG_INFO_FIELDS:
        node = cm._get(schema, tuple(p for part in field.path for p in ("properties", part)))
        # Not listed: 250 country codes, and DC-Rights, which also takes URLs and free text.
        if "enum" in node and field.label not in ("Arkhiv-Country", "DC-Rights"):
            assert profile[field.label]["values"] == node["enum"], field.label
        else:
            assert "values" not in profile[field.label], field.label


def test_bag_info_lists_every_missing_label_at_once():
    meta, checks = metadata_from_bag_info({"DC-Title": ["Bell tower"], "Contact-Name": ["Olena"]})
    assert meta is None
    assert _failures(checks) == [
        "bag-info.txt: DC-Type: required",
        "bag-info.txt: DC-Coverage-Spatial: required",
        "bag-info.txt: Arkhiv-Country: required",
        "bag-info.txt: Arkhiv-Capture-Mode: required",
        "bag-info.txt: DC-Date: required",
        "bag-info.txt: Arkhiv-Publish-As: required",
        "bag-info.txt: DC-Rights: required",
        "bag-info.txt: Arkhiv-Permission-Statement: required",
        "bag-info.txt: Arkhiv-Permission-Granted-By: required",
    ]
    assert all(c.name == "capture-metadata.bag-info" and c.path == "bag-info.txt" for c in checks)


def test_bag_info_without_a_contributor(example_bag_info):
    labels = {
        k: v for k, v in example_bag_info.items() if k not in ("DC-Creator", "Arkhiv-Pseudonym")
    }
    _, checks = metadata_from_bag_info(labels)
    assert "bag-info.txt: DC-Creator or Arkhiv-Pseudonym: one of them is required" in _failures(
        checks
    )


def test_bag_info_bad_values(example_bag_info):
    labels = dict(example_bag_info)
    labels |= {
        "Arkhiv-Latitude": ["50,2512"],
        "Arkhiv-Longitude": ["200"],
        "DC-Type": ["Sculpture"],
        "DC-Rights": ["CC-BY-ND-4.0"],
    }
    meta, checks = metadata_from_bag_info(labels)
    assert meta is None
    failures = _failures(checks)
    assert failures[:3] == [
        'bag-info.txt: DC-Type: "Sculpture" is not allowed; use one of: building, '
        "religious-building, monument, memorial, sculpture, architectural-element, interior, "
        "museum-object, archaeological-site, archaeological-find, landscape, other",
        "bag-info.txt: Arkhiv-Latitude: is not a decimal number (like 50.4501)",
        "bag-info.txt: Arkhiv-Longitude: must be at most 180",
    ]
    assert failures[3].startswith('bag-info.txt: DC-Rights: "CC-BY-ND-4.0" is not allowed')
    assert len(failures) == 4
    assert not any("50,2512" in f or "200" in f for f in failures)


def test_only_one_coordinate_in_bag_info(example_bag_info):
    labels = {k: v for k, v in example_bag_info.items() if k != "Arkhiv-Longitude"}
    _, checks = metadata_from_bag_info(labels)
    assert _failures(checks) == ["bag-info.txt: Arkhiv-Longitude: required"]


@pytest.mark.parametrize(
    ("rights", "expected"),
    [
        ("cc-by-sa-4.0", {"license": "CC-BY-SA-4.0"}),
        ("https://creativecommons.org/licenses/by-nc/4.0/", {"license": "CC-BY-NC-4.0"}),
        ("https://creativecommons.org/publicdomain/zero/1.0/", {"license": "CC0-1.0"}),
        ("© Zhytomyr Regional Museum, all rights reserved", {"license": "other",
         "license_text": "© Zhytomyr Regional Museum, all rights reserved"}),
    ],
)  # fmt: skip
def test_dc_rights_forms(example_bag_info, rights, expected):
    labels = example_bag_info | {"DC-Rights": [rights]}
    meta, checks = metadata_from_bag_info(labels)
    assert meta is not None, _failures(checks)
    assert meta.rights.model_dump(mode="json", exclude_none=True, exclude={"holder"}) == expected


def test_bag_info_labels_ignore_case_and_fall_back_to_contact_name(example_bag_info):
    labels = {
        k.lower(): v
        for k, v in example_bag_info.items()
        if k not in ("DC-Creator", "DC-Description")
    }
    labels["Contact-Name"] = ["O. Kovalenko"]
    labels["DC-Description"] = ["First paragraph.", "Second paragraph."]
    meta, checks = metadata_from_bag_info(labels)
    assert meta is not None, _failures(checks)
    assert meta.contributor.name == "O. Kovalenko"
    assert meta.object.description == "First paragraph.\n\nSecond paragraph."


def test_no_description_at_all(tmp_path):
    meta, checks = read_capture_metadata(tmp_path, {"Source-Organization": ["A museum"]})
    assert meta is None
    assert [(c.name, c.outcome) for c in checks] == [("capture-metadata.missing", Outcome.FAIL)]
    assert "DC-Title" in checks[0].detail["required_labels"]


def test_json_wins_and_conflicting_labels_warn(tmp_path, example, example_bag_info):
    _write(tmp_path, example)
    labels = example_bag_info | {
        "DC-Title": ["Another title"],
        "Arkhiv-Latitude": ["50.9999"],
        "DC-Date": ["2024-05-18"],  # the same day as the JSON's time: no conflict
        "Source-Organization": ["Someone else"],  # the sender, not the capture: never compared
    }
    meta, checks = read_capture_metadata(tmp_path, labels)
    assert meta is not None and meta.object.title == example["object"]["title"]
    conflicts = [c for c in checks if c.name == "capture-metadata.conflict"]
    assert all(c.outcome == Outcome.WARN for c in conflicts)
    assert [c.detail["label"] for c in conflicts] == ["DC-Title", "Arkhiv-Latitude"]
    assert '"Another title"' in conflicts[0].reason
    assert "50.9999" not in conflicts[1].reason and "50.2512" not in conflicts[1].reason
    assert _failures(checks) == []


def test_json_and_agreeing_bag_info_do_not_warn(tmp_path, example, example_bag_info):
    _write(tmp_path, example)
    _, checks = read_capture_metadata(tmp_path, example_bag_info)
    assert [c.name for c in checks] == ["capture-metadata.read"]
    # Contact-Name is who bagged it, not a claim about the capture: never a conflict.
    labels = {k: v for k, v in example_bag_info.items() if k != "DC-Creator"}
    labels["Contact-Name"] = ["The museum's registrar"]
    _, checks = read_capture_metadata(tmp_path, labels)
    assert [c.name for c in checks] == ["capture-metadata.read"]


def test_invalid_json_does_not_fall_back_to_bag_info(tmp_path, example_bag_info):
    _write(tmp_path, {"schema_version": "1.0"})
    meta, checks = read_capture_metadata(tmp_path, example_bag_info)
    assert meta is None and _failures(checks)


# --- what leaves ingest ------------------------------------------------------------------------


def test_precise_location(example):
    meta, _ = check_capture_document(example)
    location = precise_location(meta)
    assert (location.latitude, location.longitude, location.altitude) == (50.2512, 28.6634, 221.5)
    assert location.kind == "capture-metadata" and location.source == "capture-metadata"


def test_public_metadata_respects_publish_as(example):
    meta, _ = check_capture_document(example)
    public = public_metadata(meta)
    text = json.dumps(public)
    assert "coordinates" not in public["object"]
    for secret in ("Olena", "olena@example.org", "Parish priest", "50.2512"):
        assert secret not in text
    assert public["contributor"] == {
        "pseudonym": "bell-keeper",
        "publish_as": "pseudonym",
        "organization": "Volunteer Heritage Documentation Network",
    }
    anonymous = copy.deepcopy(example)
    anonymous["contributor"]["publish_as"] = "anonymous"
    anonymous["rights"]["holder"] = "Olena Kovalenko"
    public = public_metadata(check_capture_document(anonymous)[0])
    assert public["contributor"] == {"publish_as": "anonymous"}
    assert "holder" not in public["rights"]


# --- the BagIt profile -------------------------------------------------------------------------


def _bag(path: Path, *, checksums=("sha512", "sha256"), **info: str) -> bagit.Bag:
    path.mkdir()
    (path / "IMG_0001.jpg").write_bytes(b"\xff\xd8 not really a photo")
    bag_info = {"BagIt-Profile-Identifier": PROFILE_ID} | info
    return bagit.make_bag(str(path), bag_info=bag_info, checksums=list(checksums))


def _profile_failures(checks: list[Check]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for check in checks:
        if check.outcome == Outcome.FAIL:
            found.setdefault(check.name, []).append(check.reason)
    return found


def test_profile_is_a_valid_bagit_profile_1_4():
    profile = load_profile()
    info = profile["BagIt-Profile-Info"]
    assert info["BagIt-Profile-Identifier"] == PROFILE_ID
    assert info["BagIt-Profile-Version"] == "1.4.0"
    for key in ("Source-Organization", "External-Description", "Version"):
        assert info[key]
    assert profile["Allow-Fetch.txt"] is False
    assert profile["Accept-BagIt-Version"] == ["0.97", "1.0"]
    assert METADATA_FILE in profile["Tag-Files-Allowed"]
    strong = profile["Arkhiv-Manifests-Required-One-Of"]
    assert set(strong) <= set(profile["Manifests-Allowed"])
    # The library accepts it, and a profile it rejects would be caught.
    assert cm._CollectingProfile(load_profile()).violations == []
    broken = load_profile()
    del broken["BagIt-Profile-Info"]["BagIt-Profile-Identifier"]
    with pytest.raises(bagit_profile.ProfileValidationError):
        bagit_profile.Profile(PROFILE_ID, profile=broken)


def test_bag_made_with_bagit_passes(tmp_path, example):
    bag = _bag(tmp_path / "bag")
    _write(tmp_path / "bag", example)
    bag.save()
    (tmp_path / "bag" / "metadata").mkdir()
    (tmp_path / "bag" / "metadata" / "lido.xml").write_text("<lido/>")
    checks = validate_profile(tmp_path / "bag")
    assert [(c.name, c.outcome) for c in checks] == [("profile.conformance", Outcome.PASS)]
    assert PROFILE_ID in checks[0].reason


def test_documented_bag_info_makes_an_acceptable_bag(tmp_path, example, example_bag_info):
    labels = {k: v[0] for k, v in example_bag_info.items()}
    _bag(tmp_path / "bag", **labels)
    bag = bagit.Bag(str(tmp_path / "bag"))
    assert _profile_failures(validate_profile(tmp_path / "bag")) == {}
    bag_info = {k: [v] if isinstance(v, str) else v for k, v in bag.info.items()}
    meta, checks = read_capture_metadata(tmp_path / "bag", bag_info)
    assert meta == check_capture_document(example)[0], _failures(checks)


def test_md5_only_bag_fails(tmp_path):
    _bag(tmp_path / "bag", checksums=["md5"])
    failures = _profile_failures(validate_profile(tmp_path / "bag"))
    assert failures == {
        "profile.manifests": [
            "no sha512 or sha256 payload manifest (found: md5); md5 and sha1 no longer prove "
            "that nobody altered the payload: add manifest-sha512.txt"
        ]
    }


def test_md5_beside_sha256_is_accepted(tmp_path):
    _bag(tmp_path / "bag", checksums=["md5", "sha256"])
    assert _profile_failures(validate_profile(tmp_path / "bag")) == {}


def test_fetch_txt_fails(tmp_path):
    _bag(tmp_path / "bag")
    (tmp_path / "bag" / "fetch.txt").write_text("https://example.org/a.jpg 10 data/a.jpg\n")
    checks = validate_profile(tmp_path / "bag")
    assert _profile_failures(checks) == {
        "profile.fetch": ["fetch.txt is present but is not allowed."]
    }
    assert next(c for c in checks if c.name == "profile.fetch").path == "fetch.txt"


def test_bagit_0_96_fails(tmp_path):
    _bag(tmp_path / "bag")
    (tmp_path / "bag" / "bagit.txt").write_text(
        "BagIt-Version: 0.96\nTag-File-Character-Encoding: UTF-8\n"
    )
    assert _profile_failures(validate_profile(tmp_path / "bag")) == {
        "profile.bagit-version": [
            "Bag version '0.96' is not in list of allowed values: ['0.97', '1.0']"
        ]
    }


def test_every_violation_is_listed_at_once(tmp_path):
    bag = tmp_path / "bag"
    bagit.make_bag(str(_mkdir_with_file(bag)), checksums=["md5"])
    (bag / "fetch.txt").write_text("")
    (bag / "notes.txt").write_text("x")
    (bag / ".DS_Store").write_text("x")
    info = (bag / "bag-info.txt").read_text()
    (bag / "bag-info.txt").write_text(
        re.sub(r"Payload-Oxum: .*\n", "", info) + "DC-Title: a\nDC-Title: b\n"
    )
    checks = validate_profile(bag)
    failures = _profile_failures(checks)
    assert set(failures) == {"profile.bag-info", "profile.tag-files", "profile.fetch",
                             "profile.manifests"}  # fmt: skip
    assert sorted(failures["profile.bag-info"]) == [
        "Nonrepeatable tag 'DC-Title' occurs 2 times in bag-info.txt.",
        "Required tag 'Payload-Oxum' is not present in bag-info.txt.",
    ]
    assert {c.path for c in checks if c.name == "profile.tag-files"} == {"notes.txt", ".DS_Store"}
    assert ("profile.identifier", Outcome.WARN) in [(c.name, c.outcome) for c in checks]
    assert not any(str(bag) in c.reason for c in checks)  # no absolute paths in reasons


def _mkdir_with_file(path: Path) -> Path:
    path.mkdir()
    (path / "scan.ply").write_text("ply\n")
    return path


def test_missing_or_foreign_profile_identifier_is_a_warning(tmp_path):
    _bag(tmp_path / "bag", **{"BagIt-Profile-Identifier": "https://example.org/other.json"})
    checks = validate_profile(tmp_path / "bag")
    assert _profile_failures(checks) == {}
    warning = next(c for c in checks if c.name == "profile.identifier")
    assert warning.outcome == Outcome.WARN and "https://example.org/other.json" in warning.reason


def test_not_a_bag(tmp_path):
    checks = validate_profile(tmp_path)
    assert [(c.name, c.outcome) for c in checks] == [("profile.bag", Outcome.FAIL)]
    assert "bagit.txt" in checks[0].reason


@pytest.mark.parametrize(
    ("name", "accepted"),
    [("bag.zip", True), ("bag.tar", True), ("bag.tar.gz", True), ("bag.7z", False)],
)
def test_package_serialization(tmp_path, name, accepted):
    _bag(tmp_path / "bag")
    package = tmp_path / name
    package.write_bytes(b"")
    failures = _profile_failures(validate_profile(tmp_path / "bag", package=package))
    if accepted:
        assert failures == {}
    else:
        # The type's name depends on the system's MIME table; the verdict does not.
        [reason] = failures["profile.serialization"]
        assert reason.startswith("bag.7z: ")
        assert reason.endswith("is not an accepted package; send zip, tar or tar.gz")


def test_one_complaint_per_value_and_private_values_not_repeated(example):
    document = copy.deepcopy(example)
    document["permission"]["granted_on"] = "17 May 2024"  # breaks both pattern and format
    document["object"]["coordinates"]["method"] = "gps near 50.2512"
    document["contributor"]["email"] = "olena at example.org"
    _, checks = check_capture_document(document)
    failures = _failures(checks)
    assert failures == [
        f"{METADATA_FILE}: object.coordinates.method: is not allowed; use one of: device-gps, "
        "survey, map, estimated",
        f"{METADATA_FILE}: contributor.email: is not in the expected form "
        "(e.g. someone@example.org)",
        f'{METADATA_FILE}: permission.granted_on: "17 May 2024" is not a valid date '
        "(e.g. 2024-05-17)",
    ]


def test_deeply_nested_json_is_refused(tmp_path):
    tmp_path.joinpath(METADATA_FILE).write_text("[" * 200_000 + "]" * 200_000)
    _, checks = read_capture_metadata(tmp_path, {})
    assert _failures(checks) == [f"{METADATA_FILE}: is nested too deeply to be capture metadata"]
