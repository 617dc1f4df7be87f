"""Access: who is asking (users, roles, tokens) and the one place location-bearing output
passes through — precise locations only for roles allowed them, each disclosure in the audit
log; pictures leave without EXIF/XMP/IPTC; a detector that finds coordinates in any bytes."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from PIL import Image

from arkhiv.access.disclosure import clean_image, coordinate_traces, precise_locations
from arkhiv.access.viewers import (
    Forbidden,
    Unauthorized,
    Viewer,
    create_user,
    issue_token,
    revoke_token,
    viewer_for_token,
)
from arkhiv.catalog import audit_log
from arkhiv.catalog.database import reading, writing
from tests.test_submit import BERLIN, berlin_bag, env, submit

__all__ = ["env"]

PHOTOS = "photos-exif"


def gps_of(path) -> tuple[float, float] | None:
    """(latitude, longitude) from a picture's EXIF, as any reader would get it."""
    from pillow_heif import register_heif_opener

    register_heif_opener()
    with Image.open(path) as image:
        gps = image.getexif().get_ifd(0x8825)
    if 2 not in gps or 4 not in gps:
        return None

    def degrees(values, ref) -> float:
        d, m, s = (float(v) for v in values)
        sign = -1 if ref in ("S", "W") else 1
        return sign * (d + m / 60 + s / 3600)

    return degrees(gps[2], gps.get(1)), degrees(gps[4], gps.get(3))


def test_tokens_stand_for_their_users_until_revoked_or_expired(archive):
    policy = archive.settings.access
    with writing(archive.engine) as conn:
        create_user(conn, policy, "olena", "partner")
        create_user(conn, policy, "visitor", "researcher")
        token_id, token = issue_token(conn, "olena", "laptop")
        _expired_id, expired = issue_token(conn, "visitor", valid_for=timedelta(seconds=-1))
        with pytest.raises(Exception, match="exists already"):
            create_user(conn, policy, "olena", "public")
        with pytest.raises(Exception, match="no role"):
            create_user(conn, policy, "mallory", "superuser")
    with reading(archive.engine) as conn:
        viewer = viewer_for_token(conn, policy, token)
        assert (viewer.name, viewer.role) == ("olena", "partner")
        assert viewer_for_token(conn, policy, None).role == "public"
        with pytest.raises(Unauthorized, match="expired"):
            viewer_for_token(conn, policy, expired)
        with pytest.raises(Unauthorized):
            viewer_for_token(conn, policy, token + "x")
        # Only the token's hash is kept.
        assert token not in repr(conn.exec_driver_sql("SELECT * FROM api_tokens").all())
    with writing(archive.engine) as conn:
        assert revoke_token(conn, token_id)
    with reading(archive.engine) as conn, pytest.raises(Unauthorized):
        viewer_for_token(conn, policy, token)


@pytest.fixture
def berlin(archive, env, corpora, tmp_path) -> tuple[str, str, str]:
    """(the archived GPS-tagged Berlin photos' object, a partner's token, a researcher's)."""
    code, report = submit(berlin_bag(corpora, tmp_path / "bag"), env)
    assert code == 0
    policy = archive.settings.access
    with writing(archive.engine) as conn:
        create_user(conn, policy, "restorer", "partner")
        create_user(conn, policy, "student", "researcher")
        _id, partner_token = issue_token(conn, "restorer")
        _id, researcher_token = issue_token(conn, "student")
    return report["object_id"], partner_token, researcher_token


def test_precise_locations_only_for_allowed_roles_and_always_logged(archive, berlin):
    object_id, partner_token, researcher_token = berlin
    policy = archive.settings.access
    with reading(archive.engine) as conn:
        partner = viewer_for_token(conn, policy, partner_token)
        researcher = viewer_for_token(conn, policy, researcher_token)
    with pytest.raises(Forbidden, match="researcher role may not see precise locations"):
        precise_locations(archive, researcher, object_id, "curiosity")
    administrator = Viewer("root", "admin", policy)  # runs the archive, not field work
    with pytest.raises(Forbidden, match="admin role may not see precise locations"):
        precise_locations(archive, administrator, object_id, "curiosity")
    found = precise_locations(archive, partner, object_id, "planning a stabilisation survey")
    by_source = {item["source"]: (item["latitude"], item["longitude"]) for item in found}
    for source, point in BERLIN.items():
        assert np.allclose(by_source[source], point, atol=1e-6)
    with reading(archive.engine) as conn:
        entries = [e for e in audit_log.entries(conn) if e["action"].startswith("precise")]
    [entry] = entries
    assert entry["actor"] == "restorer" and entry["target"] == object_id
    assert entry["detail"]["purpose"] == "planning a stabilisation survey"
    assert entry["detail"]["locations"] == len(found)


def test_pictures_leave_without_their_metadata(corpora, tmp_path):
    checked = 0
    for source in sorted((corpora / PHOTOS).iterdir()):
        if source.suffix.lower() not in (".jpg", ".heic"):
            continue
        point = gps_of(source)
        cleaned = clean_image(source, tmp_path / source.name)
        data = cleaned.read_bytes()
        if point is not None:
            assert coordinate_traces(source.read_bytes(), [point]), source.name  # the control
            assert coordinate_traces(data, [point]) == [], source.name
            checked += 1
        with Image.open(cleaned) as image:
            exif = image.getexif()
            assert not exif.get_ifd(0x8825) and set(exif) <= {0x0112}, source.name
            assert "xmp" not in image.info and b"http://ns.adobe.com/xap" not in data
        if source.suffix.lower() == ".jpg":
            with Image.open(source) as before, Image.open(cleaned) as after:
                assert np.array_equal(np.asarray(before), np.asarray(after))  # not re-encoded
                assert before.getexif().get(0x0112, 1) == after.getexif().get(0x0112, 1)
        else:
            assert cleaned.suffix == ".jpg"  # HEIC leaves as JPEG
    assert checked >= 10  # 9 Nikon JPEGs, the Nokia and the iPhone HEIC carry GPS


def test_coordinates_are_found_in_every_usual_spelling():
    point = (50.4501, 30.5234)
    for text in ("50.4501", "lat=50.450", "30.523,", "<exif:GPSLatitude>50,27.006N"):
        assert coordinate_traces(text.encode(), [point]), text
    for text in ("50.4", "150.4501", "0.45", "30,5"):
        assert not coordinate_traces(text.encode(), [point]), text


def test_the_api_gives_precise_locations_to_partners_only(archive, berlin):
    from starlette.testclient import TestClient

    from arkhiv.web.app import create_app

    object_id, partner, researcher = berlin
    url = f"/api/v1/objects/{object_id}/location"
    points = list(BERLIN.values())
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        public = client.get(url)
        assert public.status_code == 200 and public.json()["public_location"]["cell_km"] > 0
        assert coordinate_traces(public.content, points) == []
        denied = client.get(
            url,
            params={"precise": "true", "purpose": "x"},
            headers={"Authorization": f"Bearer {researcher}"},
        )
        assert denied.status_code == 403 and coordinate_traces(denied.content, points) == []
        bad = client.get(url, headers={"Authorization": "Bearer arkhiv_nonsense"})
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
        unexplained = client.get(
            url, params={"precise": "true"}, headers={"Authorization": f"Bearer {partner}"}
        )
        assert unexplained.status_code == 422
        granted = client.get(
            url,
            params={"precise": "true", "purpose": "damage assessment"},
            headers={"Authorization": f"Bearer {partner}"},
        )
        assert granted.status_code == 200
        assert len(coordinate_traces(granted.content, points)) >= len(points)
    with reading(archive.engine) as conn:
        logged = [e for e in audit_log.entries(conn) if e["action"].startswith("precise")]
    assert [(e["actor"], e["detail"]["purpose"]) for e in logged] == [
        ("restorer", "damage assessment")
    ]


def test_users_and_tokens_from_the_command_line(archive, archive_env):
    import json
    import subprocess

    from tests.conftest import arkhiv_command, subprocess_env

    env = subprocess_env(archive_env)

    def run(*args, check=True):
        result = subprocess.run(arkhiv_command(*args), env=env, capture_output=True, text=True)
        assert result.returncode == 0 or not check, result.stderr
        return result

    run("users", "add", "olena", "--role", "partner", "--name", "Olena K.")
    assert "no role" in run("users", "add", "x", "--role", "king", check=False).stderr
    made = json.loads(run("tokens", "create", "olena", "--name", "field laptop", "--json").stdout)
    with reading(archive.engine) as conn:
        assert viewer_for_token(conn, archive.settings.access, made["token"]).role == "partner"
    [listed] = json.loads(run("tokens", "list", "olena", "--json").stdout)
    assert listed["name"] == "field laptop" and listed["valid"] and "token" not in listed
    run("tokens", "revoke", str(made["id"]))
    assert run("tokens", "revoke", str(made["id"]), check=False).returncode == 1
    assert "revoked" in run("tokens", "list", "olena").stdout
    with reading(archive.engine) as conn:
        logged = [(e["actor"], e["action"]) for e in audit_log.entries(conn)]
    assert ("cli", "token.issued") in logged and ("cli", "token.revoked") in logged
    with reading(archive.engine) as conn, pytest.raises(Unauthorized):
        viewer_for_token(conn, archive.settings.access, made["token"])
