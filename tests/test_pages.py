"""The pages without a browser: sign-in, sessions and their cookies, CSRF, rate limits, who may
open which page, the capture form's checks, and that every word has its Ukrainian."""

from __future__ import annotations

import ast
import base64
import io
import re
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from arkhiv.catalog.database import reading
from arkhiv.catalog.tables import sealed_locations
from arkhiv.ingest.bagging import make_bag
from arkhiv.jobs.worker import Worker
from arkhiv.web import i18n
from arkhiv.web.app import create_app
from arkhiv.web.pages import environment
from tests.browser import PASSWORD, user
from tests.test_submit import env

__all__ = ["env"]

WEB = Path(__file__).resolve().parent.parent / "arkhiv" / "web"


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def signed_in(client: TestClient, name: str) -> str:
    """Sign in through the form; returns the session's CSRF token."""
    form = client.get("/signin")
    answer = client.post(
        "/signin",
        data={"csrf_token": csrf_of(form.text), "username": name, "password": PASSWORD},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/account").text)


def test_sign_in_sets_a_session_cookie_that_sign_out_ends(archive):
    user(archive, "olena", "citizen")
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        form = client.get("/signin?next=/capture")
        assert form.status_code == 200
        answer = client.post(
            "/signin",
            data={
                "csrf_token": csrf_of(form.text),
                "username": "olena",
                "password": PASSWORD,
                "next": "/capture",
            },
            follow_redirects=False,
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/capture"
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith("arkhiv_session=")
        assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
        assert PASSWORD not in cookie
        assert client.get("/capture").status_code == 200
        csrf = csrf_of(client.get("/account").text)
        assert (
            client.post("/signout", data={"csrf_token": csrf}, follow_redirects=False).status_code
            == 303
        )
        assert client.get("/capture", follow_redirects=False).status_code == 303  # to sign-in


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_over_https_the_cookie_is_secure_and_host_bound(archive):
    user(archive, "olena", "citizen")
    app = create_app(archive, embedded_worker=False)
    with TestClient(app, base_url="https://arkhiv.example") as client:
        signed_in(client, "olena")
        cookies = [c for c in client.cookies.jar if c.name.startswith("__Host-arkhiv_session")]
        assert cookies and cookies[0].secure and cookies[0].path == "/"


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_wrong_passwords_get_one_answer_and_are_rate_limited(archive):
    user(archive, "olena", "citizen")
    archive.settings.web.sign_in_attempts_per_minute = 3
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        csrf = csrf_of(client.get("/signin").text)
        answers = [
            client.post(
                "/signin",
                data={"csrf_token": csrf, "username": name, "password": "not the password"},
            )
            for name in ("olena", "nobody", "olena")
        ]
        assert [a.status_code for a in answers] == [401, 401, 401]
        assert all("Wrong user name, password or token." in a.text for a in answers)
        assert (
            "set-cookie" not in answers[0].headers
            or "arkhiv_session" not in answers[0].headers["set-cookie"]
        )
        refused = client.post(
            "/signin", data={"csrf_token": csrf, "username": "olena", "password": PASSWORD}
        )
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_forms_and_cookie_requests_need_the_csrf_token(archive):
    user(archive, "olena", "citizen")
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        assert (
            client.post("/signin", data={"username": "olena", "password": PASSWORD}).status_code
            == 403
        )
        csrf = signed_in(client, "olena")
        # Signed in by cookie: a form or an upload without the token is refused.
        assert client.post("/signout", data={}).status_code == 403
        assert client.post("/capture", data={"title": "x"}).status_code == 403
        tus = {"Tus-Resumable": "1.0.0", "Upload-Length": "10"}
        assert client.post("/uploads", headers=tus).status_code == 403
        created = client.post("/uploads", headers={**tus, "X-CSRF-Token": csrf})
        assert created.status_code == 201, created.text


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_pages_follow_the_roles(archive):
    user(archive, "olena", "citizen")
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        for path in ("/capture", "/submit", "/officer", "/requests", "/account"):
            answer = client.get(path, follow_redirects=False)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/signin?next=")
        assert client.post(
            "/uploads", headers={"Tus-Resumable": "1.0.0", "Upload-Length": "1"}
        ).status_code in (401, 403)
        signed_in(client, "olena")
        assert client.get("/capture").status_code == 200
        for path in ("/officer", "/requests", "/officer/reports/fixity.csv"):
            refused = client.get(path)
            assert refused.status_code == 403, path
            assert "text/html" in refused.headers["content-type"]
        missing = client.get("/objects/ark:99999/b3nothing1")
        assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_sign_in_goes_back_to_this_site_only(archive):
    user(archive, "olena", "citizen")
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        for target in ("//evil.example/x", "https://evil.example", "/\\evil.example"):
            form = client.get("/signin")
            answer = client.post(
                "/signin",
                data={
                    "csrf_token": csrf_of(form.text),
                    "username": "olena",
                    "password": PASSWORD,
                    "next": target,
                },
                follow_redirects=False,
            )
            assert answer.headers["location"] == "/", target


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_the_capture_form_says_what_is_missing_and_uploads_stay_their_owners(archive):
    user(archive, "olena", "citizen")
    user(archive, "taras", "citizen")
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        csrf = signed_in(client, "olena")
        headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}
        answer = client.post("/capture", data={"title": "Church"}, headers=headers)
        assert answer.status_code == 422
        fields = answer.json()["fields"]  # by the form's own field names, for the page
        for field in ("object_type", "place_name", "permission_statement", "license"):
            assert fields[field] == "This field is required.", fields
        wrong = client.post(
            "/capture", data={"title": "Church", "latitude": "50.1x"}, headers=headers
        )
        assert wrong.status_code == 422 and "50.1" not in wrong.text
        assert wrong.json()["fields"] == {"latitude": "The position is not a number."}
        tus = {"Tus-Resumable": "1.0.0", "Upload-Length": "3", "X-CSRF-Token": csrf}
        upload = client.post("/uploads", headers=tus).headers["location"].rsplit("/", 1)[-1]
        client.patch(
            f"/uploads/{upload}",
            content=b"abc",
            headers={
                **tus,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        )
    complete = {
        "title": "Church",
        "object_type": "religious-building",
        "place_name": "Irpin",
        "country": "UA",
        "captured_at": "2022-04-02",
        "contributor_pseudonym": "taras",
        "publish_as": "pseudonym",
        "license": "CC-BY-4.0",
        "permission_statement": "Public place.",
        "permission_granted_by": "public place",
        "upload": upload,
    }
    with TestClient(create_app(archive, embedded_worker=False)) as other:
        csrf = signed_in(other, "taras")
        answer = other.post("/capture", data=complete, headers={"X-CSRF-Token": csrf})
        assert answer.status_code == 422  # not taras's upload
    with reading_submissions(archive) as count:
        assert count == 0


def reading_submissions(archive):
    from contextlib import contextmanager

    from sqlalchemy import func, select

    from arkhiv.catalog.database import reading
    from arkhiv.catalog.tables import submissions

    @contextmanager
    def counted():
        with reading(archive.engine) as conn:
            yield conn.execute(select(func.count()).select_from(submissions)).scalar_one()

    return counted()


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_uploads_started_per_hour_are_limited(archive):
    user(archive, "olena", "citizen")
    archive.settings.web.uploads_per_hour = 2
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        csrf = signed_in(client, "olena")
        tus = {"Tus-Resumable": "1.0.0", "Upload-Length": "3", "X-CSRF-Token": csrf}
        codes = [client.post("/uploads", headers=tus).status_code for _ in range(3)]
        assert codes == [201, 201, 429]


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_bytes_uploaded_per_day_are_limited_across_restarts(archive):
    user(archive, "olena", "citizen")
    archive.settings.web.upload_bytes_per_day = 10
    tus = {"Tus-Resumable": "1.0.0", "Upload-Length": "6"}
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        csrf = signed_in(client, "olena")
        assert client.post("/uploads", headers={**tus, "X-CSRF-Token": csrf}).status_code == 201
    with TestClient(create_app(archive, embedded_worker=False)) as restarted:
        csrf = signed_in(restarted, "olena")
        refused = restarted.post("/uploads", headers={**tus, "X-CSRF-Token": csrf})
        assert refused.status_code == 429 and "6 of your 10 bytes" in refused.json()["detail"]
        small = {**tus, "Upload-Length": "4", "X-CSRF-Token": csrf}
        assert restarted.post("/uploads", headers=small).status_code == 201


def template_messages() -> list[str]:
    found = []
    for template in sorted((WEB / "templates").glob("*.html")):
        for _line, _function, message in environment().extract_translations(template.read_text()):
            if isinstance(message, str):
                found.append(message)
            elif isinstance(message, tuple):  # ngettext; None: a value, in value_messages()
                found.extend(m for m in message if m)
    tree = ast.parse((WEB / "pages.py").read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "_"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append(node.args[0].value)
    return found


def test_every_word_on_the_pages_has_its_ukrainian():
    ukrainian = i18n.catalogue("uk")
    messages = set(template_messages()) | set(i18n.value_messages())
    assert len(messages) > 200
    untranslated = [m for m in messages if ukrainian.gettext(m) == m]
    assert untranslated == []
    placeholders = re.compile(r"%\(\w+\)s")
    for message in messages:
        assert sorted(placeholders.findall(ukrainian.gettext(message))) == sorted(
            placeholders.findall(message)
        ), message


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_the_language_follows_the_visitor(archive):
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        assert "Catalogue of preserved heritage" in client.get("/").text
        assert 'lang="uk"' in client.get("/", headers={"Accept-Language": "uk-UA,uk;q=0.9"}).text
        chosen = client.get("/?lang=uk")
        assert "Каталог збереженої спадщини" in chosen.text
        assert "Каталог збереженої спадщини" in client.get("/").text  # remembered
        assert "Catalogue of preserved heritage" in client.get("/?lang=en").text


def tus_upload(client: TestClient, csrf: str, data: bytes, **metadata: str) -> str:
    """One file through the tus endpoint in one PATCH; returns the upload's id."""
    encoded = ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in metadata.items()
    )
    headers = {"Tus-Resumable": "1.0.0", "X-CSRF-Token": csrf}
    created = client.post(
        "/uploads",
        headers={**headers, "Upload-Length": str(len(data)), "Upload-Metadata": encoded},
    )
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    sent = client.patch(
        location,
        content=data,
        headers={
            **headers,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert sent.status_code == 204, sent.text
    return location.rsplit("/", 1)[-1]


CAPTURE_FORM = {
    "title": "Bumpy stone",
    "object_type": "archaeological-find",
    "place_name": "Chernihiv",
    "country": "UA",
    "captured_at": "2024-05-18",
    "contributor_pseudonym": "olena",
    "publish_as": "pseudonym",
    "license": "CC-BY-4.0",
    "permission_statement": "Found in our own garden.",
    "permission_granted_by": "the owner",
}


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_a_polycam_export_sent_from_the_capture_page_is_archived_as_a_depth_capture(
    archive, virus_database, tmp_path
):
    from tests.synthetic_scene import make_scene, write_polycam_export

    archive.settings.ingest.clamav_database = str(virus_database)
    export = write_polycam_export(
        tmp_path / "export", make_scene(cameras=6, width=160, height=120, focal=140.0)
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for path in sorted(export.rglob("*")):
            if path.is_file():
                zipped.write(path, path.relative_to(export.parent).as_posix())
    user(archive, "olena", "citizen")
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        csrf = signed_in(client, "olena")
        upload = tus_upload(client, csrf, buffer.getvalue(), filename="polycam.zip")
        form = {
            **CAPTURE_FORM,
            "capture_mode": "lidar-depth",
            "latitude": "51.4982",
            "longitude": "31.2893",
            "upload": upload,
        }
        answer = client.post("/capture", data=form, headers={"X-CSRF-Token": csrf})
        assert answer.status_code == 202, answer.text
        Worker(archive, ["ingest"], burst=True).run()
        outcome = client.get(f"/api/v1/submissions/{answer.json()['submission']}").json()
        assert outcome["status"] == "archived", outcome["summary"]
        assert outcome["report"]["capture_layout"]["layout"] == "polycam-raw-data"
        page = client.get(answer.json()["href"]).text
    assert "51.498" not in page and "31.289" not in page  # sealed, not shown
    assert not list((archive.settings.home / "uploads").rglob("*.bin"))  # nothing left behind
    with reading(archive.engine) as conn:
        sealed = conn.execute(select(func.count()).select_from(sealed_locations)).scalar_one()
    assert sealed >= 1


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_a_museum_sends_a_bag_folder_file_by_file(archive, virus_database, corpora, tmp_path):
    from tests.test_submit import CAPTURE

    archive.settings.ingest.clamav_database = str(virus_database)
    bag = make_bag(
        corpora / "photogrammetry/opensfm-berlin/images", tmp_path / "bag", capture_metadata=CAPTURE
    )
    files = sorted(p for p in bag.rglob("*") if p.is_file())
    user(archive, "museum-lviv", "museum")
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        csrf = signed_in(client, "museum-lviv")
        # A folder picked in the browser: every path starts with the folder's name.
        uploads = [
            tus_upload(
                client,
                csrf,
                path.read_bytes(),
                filename=path.name,
                relativePath="berlin-bag/" + path.relative_to(bag).as_posix(),
            )
            for path in files
        ]
        escaping = tus_upload(client, csrf, b"x", filename="x", relativePath="berlin-bag/../x")
        refused = client.post(
            "/submit", data={"upload": [*uploads[:1], escaping]}, headers={"X-CSRF-Token": csrf}
        )
        assert refused.status_code == 422
        assert "not allowed" in refused.json()["detail"]
        assert not (tmp_path.parent / "x").exists()
        # The refused request left the uploads whole: the same ones make the submission.
        answer = client.post("/submit", data={"upload": uploads}, headers={"X-CSRF-Token": csrf})
        assert answer.status_code == 202, answer.text
        Worker(archive, ["ingest"], burst=True).run()
        outcome = client.get(f"/api/v1/submissions/{answer.json()['submission']}").json()
    assert outcome["status"] == "archived", outcome["summary"]
    assert outcome["file_count"] == len(list((bag / "data").iterdir()))


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_failing_in_someone_elses_name_does_not_lock_them_out(archive):
    user(archive, "olena", "citizen")
    archive.settings.web.sign_in_attempts_per_minute = 2
    app = create_app(archive, embedded_worker=False)
    with TestClient(app, client=("203.0.113.9", 4000)) as stranger:
        csrf = csrf_of(stranger.get("/signin").text)
        for _ in range(3):
            stranger.post(
                "/signin", data={"csrf_token": csrf, "username": "olena", "password": "x"}
            )
        refused = stranger.post(
            "/signin", data={"csrf_token": csrf, "username": "olena", "password": PASSWORD}
        )
        assert refused.status_code == 429  # this address is done for a minute
    with TestClient(app, client=("198.51.100.7", 4000)) as owner:
        signed_in(owner, "olena")  # her own sign-in still works


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_a_session_opened_with_a_token_cannot_outlive_it(archive):
    """A leaked token signs in to the pages, but that session can neither make a token (a
    10-year one used to survive revoking the original) nor change the password, and it ends
    with the token."""
    from arkhiv.access.viewers import issue_token, revoke_token, tokens_of
    from arkhiv.catalog.database import writing

    user(archive, "partner-1", "partner")
    with writing(archive.engine) as conn:
        token_id, token = issue_token(conn, "partner-1")
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        csrf = csrf_of(client.get("/signin").text)
        answer = client.post(
            "/signin", data={"csrf_token": csrf, "token": token}, follow_redirects=False
        )
        assert answer.status_code == 303
        account = client.get("/account")
        assert account.status_code == 200 and "data-token-session" in account.text
        assert 'action="/account/tokens"' not in account.text
        assert 'action="/account/password"' not in account.text
        csrf = csrf_of(account.text)
        made = client.post(
            "/api/v1/tokens",
            json={"name": "forever", "days": 3650},
            headers={"X-CSRF-Token": csrf},
        )
        assert made.status_code == 403, made.text
        made = client.post(
            "/account/tokens", data={"csrf_token": csrf, "name": "forever", "days": "3650"}
        )
        assert made.status_code == 403
        changed = client.post(
            "/account/password",
            data={"csrf_token": csrf, "current": PASSWORD, "new": "taken over for good"},
        )
        assert changed.status_code == 403
        with reading(archive.engine) as conn:
            assert [entry["id"] for entry in tokens_of(conn, "partner-1")] == [token_id]
        with writing(archive.engine) as conn:
            revoke_token(conn, token_id)
        assert client.get("/account", follow_redirects=False).status_code == 303
    # Signed in with the password, the same person may; and may revoke every token with it.
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        csrf = signed_in(client, "partner-1")
        made = client.post(
            "/api/v1/tokens", json={"name": "laptop"}, headers={"X-CSRF-Token": csrf}
        )
        assert made.status_code == 201
        changed = client.post(
            "/account/password",
            data={
                "csrf_token": csrf,
                "current": PASSWORD,
                "new": "a new and longer passphrase",
                "revoke_tokens": "yes",
            },
        )
        assert changed.status_code == 200 and "Your API tokens were revoked." in changed.text
        gone = client.get(
            "/api/v1/tokens", headers={"Authorization": f"Bearer {made.json()['token']}"}
        )
        assert gone.status_code == 401


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_a_link_cannot_make_a_partner_disclose_a_location(archive):
    user(archive, "partner-1", "partner")
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        csrf = signed_in(client, "partner-1")
        address = "/api/v1/objects/ark:99999/b3nothing1/location?precise=true&purpose=x"
        assert client.get(address).status_code == 403  # a cookie alone: no
        assert client.get(address, headers={"X-CSRF-Token": csrf}).status_code == 404


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_pages_cannot_be_framed_and_bad_addresses_get_pages(archive):
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        page = client.get("/")
        assert page.headers["x-frame-options"] == "DENY"
        policy = page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
        assert "https://tile.openstreetmap.org" in policy  # the map's tiles, nothing else
        bad = client.get("/?page=abc")
        assert bad.status_code == 422 and "text/html" in bad.headers["content-type"]
        assert "abc" not in bad.text.split("<main")[1]  # the input is not repeated
        api = client.get("/api/v1/objects?limit=abc")
        assert api.status_code == 422 and api.headers["content-type"] == "application/json"
        ukrainian = client.get("/?page=abc&lang=uk")
        assert "Значення в адресі недійсне." in ukrainian.text


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_a_resent_form_makes_one_submission_and_a_refused_one_keeps_the_files(
    archive, virus_database, corpora
):
    archive.settings.ingest.clamav_database = str(virus_database)
    photo = (corpora / "photogrammetry/opensfm-berlin/images/01.jpg").read_bytes()
    user(archive, "olena", "citizen")
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        csrf = signed_in(client, "olena")
        headers = {"X-CSRF-Token": csrf}
        clash = [
            tus_upload(client, csrf, photo, filename="a", relativePath="set/a"),
            tus_upload(client, csrf, photo, filename="b", relativePath="set/a/b"),
        ]
        refused = client.post("/capture", data={**CAPTURE_FORM, "upload": clash}, headers=headers)
        assert refused.status_code == 422
        assert refused.json()["detail"] == "A file has the same name as a folder."
        form = {**CAPTURE_FORM, "upload": clash[:1], "submission_key": "form-1-abcdef"}
        first = client.post("/capture", data=form, headers=headers)
        again = client.post("/capture", data=form, headers=headers)  # the answer was lost
        assert first.status_code == again.status_code == 202, first.text
        assert first.json()["submission"] == again.json()["submission"]
    with reading_submissions(archive) as count:
        assert count == 1


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_a_researcher_requests_a_package_and_downloads_it(archive, env, corpora, tmp_path):
    from tests.test_dissemination_api import archived_model

    bunny = archived_model(
        archive, env, tmp_path, corpora / "3d-models/bunny-multiformat/bunny.glb", "Bunny"
    )
    user(archive, "researcher-1", "researcher")
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        csrf = signed_in(client, "researcher-1")
        page = client.get(f"/objects/{bunny}").text
        assert "Request the package" in page and "Show the precise location" not in page
        asked = client.post(
            f"/objects/{bunny}/dips",
            data={"csrf_token": csrf, "format": ["glb", "stl"]},
            follow_redirects=False,
        )
        assert asked.status_code == 303 and asked.headers["location"] == "/requests"
        waiting = client.get("/requests").text
        assert "queued" in waiting and "data-watch-url" in waiting
        refused = client.post(
            f"/objects/{bunny}/dips",
            data={"csrf_token": csrf, "format": ["glb"], "originals": "yes"},
        )
        assert refused.status_code == 403  # originals are for partners
        Worker(archive, ["derive"], burst=True).run()
        ready = client.get("/requests").text
        link = re.search(r'href="(/api/v1/dips/\d+/download)"', ready).group(1)
        package = client.get(link)
    assert package.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(package.content)).namelist()
    assert any(name.endswith(".glb") for name in names)
    assert any(name.endswith(".stl") for name in names)


def test_tokens_are_made_by_a_signed_in_person_and_revoked_by_their_owner(archive):
    from arkhiv.catalog import audit_log

    user(archive, "olena", "researcher")
    user(archive, "taras", "researcher")
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        csrf = signed_in(client, "olena")
        page = client.post(
            "/account/tokens", data={"csrf_token": csrf, "name": "laptop", "days": "30"}
        )
        assert page.status_code == 200
        made = re.search(r"<code>(arkhiv_[^<]+)</code>", page.text).group(1)
        bearer = {"Authorization": f"Bearer {made}"}
        mine = client.get("/api/v1/tokens", headers=bearer).json()
        assert [(t["name"], t["valid"]) for t in mine] == [("laptop", True)]
        assert "token" not in mine[0] and made not in client.get("/account").text  # shown once
        # Through the API, with the session (and its CSRF token): a second one.
        answer = client.post(
            "/api/v1/tokens",
            json={"name": "harvester", "days": 7},
            headers={"X-CSRF-Token": csrf},
        )
        assert answer.status_code == 201, answer.text
        second = answer.json()
        assert second["token"].startswith("arkhiv_") and second["expires_at"]
        assert client.post("/api/v1/tokens", json={"name": "x"}).status_code == 403  # no CSRF
        # A token cannot make more tokens, and strangers cannot see or revoke them.
        refused = client.post("/api/v1/tokens", json={"name": "more"}, headers=bearer)
        assert refused.status_code == 403 and "signed in" in refused.json()["detail"]
        client.cookies.clear()
        assert client.get("/api/v1/tokens").status_code == 401
        assert client.post("/api/v1/tokens", json={"name": "x"}).status_code == 403  # no CSRF
        taras = signed_in(client, "taras")
        assert client.get("/api/v1/tokens").json() == []
        stolen = client.delete(f"/api/v1/tokens/{second['id']}", headers={"X-CSRF-Token": taras})
        assert stolen.status_code == 404
        client.cookies.clear()
        # The owner revokes with the token itself; it stops working at once.
        assert client.delete(f"/api/v1/tokens/{second['id']}", headers=bearer).status_code == 204
        after = client.get("/api/v1/tokens", headers={"Authorization": f"Bearer {second['token']}"})
        assert after.status_code == 401
        assert client.delete(f"/api/v1/tokens/{second['id']}", headers=bearer).status_code == 404
        # And from the account page: the first one.
        csrf = signed_in(client, "olena")
        listed = client.get("/account").text
        assert "harvester" in listed and "revoked" in listed
        gone = client.post(
            f"/account/tokens/{mine[0]['id']}/revoke",
            data={"csrf_token": csrf},
            follow_redirects=False,
        )
        assert gone.status_code == 303
        assert client.get("/api/v1/tokens", headers=bearer).status_code == 401
        bad = client.post("/account/tokens", data={"csrf_token": csrf, "name": "x", "days": "0"})
        assert bad.status_code == 422
    with reading(archive.engine) as conn:
        actions = [(e["actor"], e["action"]) for e in audit_log.entries(conn)]
    assert actions.count(("olena", "token.issued")) == 2
    assert actions.count(("olena", "token.revoked")) == 2
