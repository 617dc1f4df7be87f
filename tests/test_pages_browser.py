"""The web application in Debian's Chromium (Playwright): a citizen's capture from a phone
through a cut connection, a museum's bag with a bad file, the 3D viewer, the officer's
dashboard after a repair, and that a visitor's pages never carry a precise location."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import re
import shutil
import threading
import time
import zipfile

import pytest
from PIL import Image, ImageStat
from playwright.sync_api import expect

from arkhiv.access.disclosure import coordinate_traces, precise_locations
from arkhiv.access.viewers import Viewer
from arkhiv.aip.show import object_document
from arkhiv.catalog import audit_log
from arkhiv.catalog.database import reading
from arkhiv.ingest.bagging import make_bag
from arkhiv.jobs.worker import Worker
from tests.browser import (
    DESKTOP,
    PHONE,
    browser,
    fits_the_screen,
    new_page,
    screenshot,
    server,
    sign_in,
    user,
)
from tests.conftest import REPO
from tests.test_access import gps_of
from tests.test_dissemination_api import archived_model
from tests.test_fixity_audit import audit, flip_a_bit
from tests.test_submit import BERLIN, CAPTURE, env, submit

__all__ = ["browser", "env", "server"]

# The browser sees one server; the catalogs are tested elsewhere.
pytestmark = pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)

BERLIN_PHOTOS = ("01.jpg", "02.jpg", "03.jpg")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_for_status(page, statuses: tuple[str, ...], timeout_s: float = 240) -> str:
    """The submission page refreshes itself until ingest has an outcome."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = page.locator("[data-status]").first.get_attribute("data-status")
        if found in statuses:
            return found
        assert time.monotonic() < deadline, f"still {found}"
        page.wait_for_timeout(500)


# Where the phone says it is (not where the photos' GPS says: the form's position is its own).
PHONE_POSITION = (52.5170365, 13.3888599)


@pytest.mark.timeout(600)  # its waits add up to more than the suite's 300 s under load
def test_a_citizen_uploads_photos_from_a_phone_through_a_cut_connection(
    archive, server, browser, corpora
):
    user(archive, "olena", "citizen")
    page = new_page(
        browser,
        PHONE,
        geolocation={"latitude": PHONE_POSITION[0], "longitude": PHONE_POSITION[1]},
        permissions=["geolocation"],
    )
    sign_in(page, server, "olena", "/capture")
    assert fits_the_screen(page)
    screenshot(page, "capture-phone")

    photos = [corpora / "photogrammetry/opensfm-berlin/images" / name for name in BERLIN_PHOTOS]
    page.set_input_files("#photos", [str(p) for p in photos])
    page.get_by_label("Name of the object").fill("Rotes Rathaus, east façade")
    page.get_by_label("Type", exact=True).select_option("building")
    page.get_by_label("Place (town, village or district)").fill("Berlin-Mitte")
    page.get_by_label("Country (two letters)").fill("DE")
    page.get_by_label("Permission: why you were allowed to take these pictures").fill(
        "Public street."
    )
    page.get_by_label("Who gave permission (or “public place”)").fill("public place")
    page.get_by_label("Your name or pseudonym").fill("spree-walker")
    page.get_by_role("button", name="Add my current position").click()
    expect(page.locator("[data-location-note]")).to_contain_text("kept secret")

    # The connection dies after a few chunks: every upload request fails until it is back.
    seen: list[tuple[str, str, str | None]] = []
    page.on(
        "request",
        lambda r: (
            seen.append((r.method, r.url, r.headers.get("upload-offset")))
            if "/uploads/" in r.url
            else None
        ),
    )
    cut = threading.Event()
    patches = {"count": 0}

    def network(route):
        if route.request.method == "PATCH":
            patches["count"] += 1
            if patches["count"] == 4:
                cut.set()
        if cut.is_set():
            route.abort("internetdisconnected")
        else:
            route.continue_()

    page.route("**/uploads/**", network)
    page.get_by_role("button", name="Upload and submit").click()
    try:
        expect(page.locator("[data-upload-status]")).to_contain_text(
            "Connection trouble", timeout=60_000
        )
    except AssertionError:
        raise AssertionError(f"the page's problems: {page.problems}") from None
    assert cut.is_set()
    page.context.set_offline(True)
    screenshot(page, "capture-phone-connection-lost")
    page.wait_for_timeout(1500)
    offset_at_cut = int(page.locator("[data-upload-form]").get_attribute("data-percent") or 0)
    assert 0 < offset_at_cut < 100
    page.context.set_offline(False)
    cut.clear()
    page.wait_for_url(re.compile(r"/submissions/[0-9a-f-]+$"), timeout=120_000)

    # The uploads resumed: after the cut the client asked the server for its offset (HEAD)
    # and went on from a non-zero offset rather than starting again.
    after_cut = seen[[m for m, _u, _o in seen].index("PATCH") + 3 :]
    assert any(method == "HEAD" for method, _u, _o in after_cut), seen
    assert any(
        method == "PATCH" and offset and int(offset) > 0 for method, _u, offset in after_cut[1:]
    )
    status = wait_for_status(page, ("archived", "rejected"))
    screenshot(page, "capture-phone-report")
    assert status == "archived", page.locator("main").inner_text()
    assert fits_the_screen(page)

    # Byte for byte what the phone had; the precise location sealed, never on the page.
    object_id = page.locator("main a[href^='/objects/']").first.inner_text()
    with reading(archive.engine) as conn:
        document = object_document(conn, object_id)
    archived = {
        f["logical_path"].rsplit("/", 1)[-1]: f["digests"]["sha256"]
        for f in document["files"]
        if f["role"] == "original"
    }
    for photo in photos:
        assert archived[photo.name] == sha256(photo.read_bytes())
    # The phone's position was sealed with the capture, and is nowhere on the pages.
    officer = Viewer("officer", "officer", archive.settings.access)
    sealed = precise_locations(archive, officer, object_id, "checking the capture page")
    assert any(
        abs(found["latitude"] - PHONE_POSITION[0]) < 1e-6
        and abs(found["longitude"] - PHONE_POSITION[1]) < 1e-6
        for found in sealed
    ), sealed
    assert coordinate_traces(page.content().encode(), [PHONE_POSITION, *BERLIN.values()]) == []
    page.goto(f"{server.base}/objects/{object_id}")
    assert coordinate_traces(page.content().encode(), [PHONE_POSITION, *BERLIN.values()]) == []


def bad_bag_zip(corpora, tmp_path) -> tuple[bytes, bytes]:
    """A zipped bag whose 02.jpg no longer matches its manifest, and the corrected one."""
    images = tmp_path / "images"
    shutil.copytree(corpora / "photogrammetry/opensfm-berlin/images", images)
    bag = make_bag(images, tmp_path / "museum-bag", capture_metadata=CAPTURE)

    def zipped() -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive_zip:
            for path in sorted(bag.rglob("*")):
                if path.is_file():
                    archive_zip.write(path, "museum-bag/" + path.relative_to(bag).as_posix())
        return buffer.getvalue()

    good = zipped()
    victim = bag / "data" / "02.jpg"
    original = victim.read_bytes()
    victim.write_bytes(original[:-1000] + bytes(1000))  # same size: only the digest tells
    bad = zipped()
    return bad, good


def test_a_museum_sees_which_file_is_wrong_and_resubmits(
    archive, server, browser, corpora, tmp_path
):
    user(archive, "museum-kyiv", "museum")
    bad, good = bad_bag_zip(corpora, tmp_path)
    page = new_page(browser, DESKTOP)
    sign_in(page, server, "museum-kyiv", "/submit")
    screenshot(page, "museum-submit")
    page.set_input_files(
        "#bag", files=[{"name": "berlin-bag.zip", "mimeType": "application/zip", "buffer": bad}]
    )
    page.get_by_role("button", name="Upload and submit").click()
    page.wait_for_url(re.compile(r"/submissions/[0-9a-f-]+$"))
    assert wait_for_status(page, ("archived", "rejected")) == "rejected"
    screenshot(page, "museum-report-rejected")
    row = page.locator("table.per-file tbody tr", has_text="data/02.jpg")
    assert row.count() >= 1
    assert "02.jpg" in row.first.inner_text()
    assert re.search(r"sha|checksum|digest", row.first.inner_text(), re.I)
    assert page.locator("table.per-file tbody tr", has_text="data/01.jpg").count() == 0

    page.get_by_role("link", name="Submit a corrected package").click()
    page.set_input_files(
        "#bag", files=[{"name": "berlin-bag.zip", "mimeType": "application/zip", "buffer": good}]
    )
    page.get_by_role("button", name="Upload and submit").click()
    page.wait_for_url(re.compile(r"/submissions/[0-9a-f-]+$"))
    assert wait_for_status(page, ("archived", "rejected")) == "archived"

    page.goto(server.base + "/submissions")
    screenshot(page, "museum-submissions")
    statuses = page.locator("tbody .status").all_inner_texts()
    assert sorted(statuses) == ["archived", "rejected"]
    assert page.locator("main ul.results a").count() == 1  # the archived object


def wait_until(condition, timeout_s: float = 15) -> bool:
    """Polls `condition` (frames come slowly to a software renderer on a busy machine)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return False


def orbit_by_mouse_and_keyboard(page, viewer, png: bytes) -> None:
    """Dragging turns the camera and changes the picture; so do the arrow keys."""
    theta = "document.querySelector('model-viewer').getCameraOrbit().theta"
    box = viewer.bounding_box()
    centre_x, centre_y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    before = page.evaluate(theta)
    page.mouse.move(centre_x, centre_y)
    page.mouse.down()
    page.mouse.move(centre_x + box["width"] / 4, centre_y, steps=12)
    page.mouse.up()
    assert wait_until(lambda: abs(page.evaluate(theta) - before) > 0.1), "drag did not orbit"
    assert wait_until(lambda: viewer.screenshot() != png), "the picture did not change"
    dragged = page.evaluate(theta)
    viewer.focus()

    def turned_by_keys() -> bool:
        page.keyboard.press("ArrowLeft")
        return abs(page.evaluate(theta) - dragged) > 0.01

    assert wait_until(turned_by_keys), (
        "the keyboard did not orbit",
        page.evaluate("document.activeElement && document.activeElement.tagName"),
    )


def use_the_viewer_controls(page, viewer) -> None:
    """Zoom with the wheel, more light, full detail, full screen and back."""
    orbit = "document.querySelector('model-viewer').getCameraOrbit()"
    box = viewer.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    before = page.evaluate(f"{orbit}.radius")
    page.mouse.wheel(0, -600)
    assert wait_until(lambda: page.evaluate(f"{orbit}.radius") < 0.95 * before), "no zoom"

    def brightness() -> float:
        return ImageStat.Stat(Image.open(io.BytesIO(viewer.screenshot())).convert("L")).mean[0]

    dim = brightness()
    page.get_by_role("slider", name="Light").fill("2.5")
    assert page.evaluate("document.querySelector('model-viewer').exposure") == 2.5
    assert wait_until(lambda: brightness() > dim + 2), "more light did not brighten the model"

    page.get_by_role("button", name="Full detail").click()
    page.wait_for_selector("[data-viewer][data-loaded=high]", timeout=120_000)
    page.get_by_role("button", name="Full screen").click()
    assert wait_until(lambda: page.evaluate("!!document.fullscreenElement")), "no full screen"
    page.get_by_role("button", name="Full screen").click()
    assert wait_until(lambda: page.evaluate("!document.fullscreenElement"))


def non_blank(png: bytes) -> tuple[float, float]:
    """(standard deviation of the grey levels, share of pixels far from the background)."""
    image = Image.open(io.BytesIO(png)).convert("L")
    background = image.getpixel((2, 2))
    pixels = list(image.getdata())
    differing = sum(1 for value in pixels if abs(value - background) > 24) / len(pixels)
    return ImageStat.Stat(image).stddev[0], differing


def test_a_visitor_turns_the_model_in_the_3d_viewer(
    archive, env, server, browser, corpora, tmp_path
):
    bunny = archived_model(
        archive, env, tmp_path, corpora / "3d-models/bunny-multiformat/bunny.glb", "Bunny"
    )
    for viewport, expected_level, name in ((DESKTOP, "medium", "desktop"), (PHONE, "low", "phone")):
        page = new_page(browser, viewport)
        page.goto(f"{server.base}/objects/{bunny}")
        page.wait_for_selector("[data-viewer][data-loaded]", timeout=120_000)
        assert page.locator("[data-viewer]").get_attribute("data-loaded") == expected_level
        viewer = page.locator("model-viewer")
        page.wait_for_timeout(1000)  # the first frames after load
        png = viewer.screenshot()
        (screenshot(page, f"object-{name}"))
        deviation, differing = non_blank(png)
        assert deviation > 8 and differing > 0.02, (deviation, differing)
        orbit_by_mouse_and_keyboard(page, viewer, png)
        if viewport is DESKTOP:
            use_the_viewer_controls(page, viewer)
        assert page.get_by_role("button", name="Full screen").is_visible()
        assert page.get_by_text("CC-BY-4.0").count() >= 1  # licence
        assert bunny in page.locator(".citation").inner_text()
        if viewport is PHONE:
            assert fits_the_screen(page)
        assert page.problems == []  # no script error, nothing the CSP refused


@pytest.mark.damages_aips  # the second object is left damaged, as the dashboard must show
def test_an_officer_sees_the_repaired_replica(archive, env, server, browser, corpora, tmp_path):
    import random

    from arkhiv.aip.placement import object_key

    images = corpora / "photogrammetry/opensfm-berlin/images"
    code, report = submit(make_bag(images, tmp_path / "bag", capture_metadata=CAPTURE), env)
    assert code == 0, report
    object_id = report["object_id"]
    root = archive.settings.store("site-b").path / object_key(object_id)
    victim = next(p for p in sorted(root.rglob("*.jpg")) if "/content/" in p.as_posix())
    flip_a_bit(victim, __import__("random").Random(3))
    code, outcome = audit(env)
    assert code == 0, outcome
    assert len(outcome["repaired"]) == 1

    # A second object whose every copy of one photo went bad: damaged, with nothing to repair
    # from.
    second = tmp_path / "second"
    shutil.copytree(images, second)
    (second / "notes.txt").write_text("a second visit\n")  # the same photos twice is refused
    capture = copy.deepcopy(CAPTURE)
    capture["object"]["title"] = "Second visit"
    code, report = submit(make_bag(second, tmp_path / "bag2", capture_metadata=capture), env)
    assert code == 0, report
    damaged = report["object_id"]
    for store in archive.settings.stores:
        photo = next(
            p
            for p in sorted((store.path / object_key(damaged)).rglob("01.jpg"))
            if "/content/" in p.as_posix()
        )
        flip_a_bit(photo, random.Random(5))
    code, outcome = audit(env)
    assert code == 1, outcome

    user(archive, "officer-ana", "officer")
    page = new_page(browser, DESKTOP)
    sign_in(page, server, "officer-ana", "/officer")
    screenshot(page, "officer-dashboard")
    repairs = page.locator("[data-repairs] li", has_text=object_id)
    assert repairs.count() == 1
    assert "site-b" in repairs.first.inner_text()
    stores = page.locator("tr[data-store]")
    assert stores.count() == len(archive.settings.stores)
    # Each store's audits against the schedule: both objects' files checked in this interval.
    for row in range(stores.count()):
        progress = stores.nth(row).locator("progress")
        assert float(progress.get_attribute("value")) == float(progress.get_attribute("max")) > 0
    problems = page.locator("[data-at-risk] li")
    assert problems.count() == 1
    assert "Second visit" in problems.first.inner_text()
    assert "01.jpg" in problems.first.inner_text() and "damaged" in problems.first.inner_text()
    # The job queue: the ingests that brought both objects in, done.
    jobs = page.locator("tr[data-job]").all_inner_texts()
    assert sum("ingest" in job and "done" in job for job in jobs) >= 2, jobs

    page.locator("[data-repairs] a").first.click()
    screenshot(page, "officer-history")
    events = page.locator("table.events tbody tr").all_inner_texts()
    assert any("fixity check" in e and "failure" in e and "site-b" in e for e in events), events
    assert any("replication" in e and "site-b" in e for e in events), events
    with page.expect_download() as download:
        page.goto(server.base + "/officer")
        page.get_by_role("link", name="CSV").click()
    assert download.value.suggested_filename.startswith("fixity-")


SITE = (49.8397123, 24.0297456)


def test_a_visitor_never_sees_precise_coordinates_and_a_partner_sees_them_logged(
    archive, env, server, browser, corpora, tmp_path
):
    photos = tmp_path / "photos"
    shutil.copytree(corpora / "photos-exif", photos, ignore=shutil.ignore_patterns("*.rst"))
    points = [p for p in (gps_of(path) for path in sorted(photos.iterdir())) if p]
    capture = copy.deepcopy(CAPTURE)
    capture["object"]["coordinates"] = {"latitude": SITE[0], "longitude": SITE[1]}
    code, report = submit(make_bag(photos, tmp_path / "bag", capture_metadata=capture), env)
    assert code == 0, report
    object_id = report["object_id"]
    model = archived_model(
        archive, env, tmp_path, corpora / "3d-models/bunny-multiformat/bunny.glb", "Model"
    )
    Worker(archive, ["reconstruct"], burst=True).run()
    secret = [*points, SITE, *BERLIN.values()]

    leaks: list[str] = []
    page = new_page(browser, DESKTOP)

    def inspect(response) -> None:
        kind = response.headers.get("content-type", "")
        if response.ok and any(t in kind for t in ("html", "json", "javascript", "xml", "text")):
            found = coordinate_traces(response.body(), secret)
            leaks.extend(f"{response.url}: {how}" for how in found)

    page.on("response", inspect)
    for path in (
        "/",
        "/?lang=uk",
        f"/objects/{object_id}",
        f"/objects/{object_id}?lang=uk",
        f"/objects/{model}",
        "/?q=Rathaus",
        "/?country=DE",
    ):
        page.goto(server.base + path)
        page.wait_for_load_state("networkidle")
    screenshot(page, "catalogue-visitor")
    page.goto(server.base + "/")
    # The object with a location is drawn, as a cell.
    assert int(page.locator("[data-map]").get_attribute("data-ready")) == 1
    assert page.locator(".map path.leaflet-interactive").count() >= 1
    assert leaks == []
    assert page.problems == []
    assert page.get_by_text("Precise location").count() == 0

    # A region of the map: the area shown is searched; elsewhere finds nothing.
    page.goto(server.base + "/?lang=en")  # the visit above left the pages in Ukrainian
    everything = page.locator("main ul.results a").count()
    assert everything == 2  # the photos and the model (which has no location)
    page.get_by_role("button", name="Search the area shown on the map").click()
    page.wait_for_url(re.compile(r"bbox="))
    assert page.locator("[data-area-chosen]").is_visible()
    assert page.locator("main ul.results a").count() == 1
    page.goto(server.base + "/?bbox=100,-10,110,0")
    assert page.get_by_text("Nothing found.").is_visible()
    page.get_by_role("link", name="Search everywhere").click()
    page.wait_for_load_state("networkidle")
    assert page.locator("main ul.results a").count() == everything
    assert leaks == [] and page.problems == []

    user(archive, "partner-uzhhorod", "partner")
    partner = new_page(browser, DESKTOP)
    sign_in(partner, server, "partner-uzhhorod", f"/objects/{object_id}")
    partner.get_by_label("Why do you need it? (written to the audit log)").fill(
        "damage assessment after shelling"
    )
    partner.get_by_role("button", name="Show the precise location").click()
    screenshot(partner, "object-partner-precise")
    table = partner.locator(".restricted table").inner_text()
    assert f"{SITE[0]}" in table
    with reading(archive.engine) as conn:
        entries = list(audit_log.entries(conn))
    assert any(
        e["actor"] == "partner-uzhhorod" and "damage assessment" in json.dumps(e, default=str)
        for e in entries
    ), entries


AXE = REPO / "frontend" / "node_modules" / "axe-core" / "axe.min.js"


def accessibility_violations(page) -> list[str]:
    """axe-core's WCAG 2.1 A and AA rules on the page as it is now."""
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        """async () => {
            const result = await axe.run(document, {
                runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
            });
            return result.violations.map((v) =>
                `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
        }"""
    )
    return found


@pytest.mark.timeout(900)  # about 90 page visits with axe; two minutes on an idle machine
def test_every_page_passes_the_accessibility_checks(
    archive, env, server, browser, corpora, tmp_path
):
    assert AXE.is_file(), "axe-core comes with `make test` (frontend/package.json)"
    from arkhiv.access.viewers import issue_token
    from arkhiv.catalog.database import writing
    from arkhiv.jobs.dissemination import queue_dip

    bunny = archived_model(
        archive, env, tmp_path, corpora / "3d-models/bunny-multiformat/bunny.glb", "Bunny"
    )
    # A refused package, so that the report page shows its per-file problems.
    bad, _good = bad_bag_zip(corpora, tmp_path)
    (tmp_path / "bad.zip").write_bytes(bad)
    code, refused = submit(tmp_path / "bad.zip", env)
    assert code == 1, refused
    # Rows in the tables: a researcher's request and token, for the researcher's pages.
    researchers = {f"researcher-{viewport['width']}" for viewport in (PHONE, DESKTOP)}
    for name in researchers:
        user(archive, name, "researcher")
        with writing(archive.engine) as conn:
            queue_dip(
                conn,
                archive,
                Viewer(name, "researcher", archive.settings.access),
                bunny,
                ["glb"],
                False,
            )
            issue_token(conn, name, "harvester")
    pages = {
        None: ["/", "/?q=bunny", f"/objects/{bunny}", "/signin", "/objects/ark:99999/b3none0"],
        "citizen": ["/capture", "/submit", "/submissions", "/account"],
        "researcher": ["/requests", f"/objects/{bunny}", "/account"],
        "partner": [f"/objects/{bunny}"],
        "officer": [
            "/officer",
            f"/officer/objects/{bunny}",
            f"/submissions/{refused['id']}",
        ],
    }
    problems = {}
    for role, paths in pages.items():
        for viewport in (PHONE, DESKTOP):
            # axe is injected as a script of the test's own: the pages' CSP would refuse it.
            page = new_page(browser, viewport, bypass_csp=True)
            if role:
                name = f"{role}-{viewport['width']}"
                sign_in(page, server, name if name in researchers else user(archive, name, role))
            for path in paths:
                for language in ("en", "uk"):
                    separator = "&" if "?" in path else "?"
                    page.goto(f"{server.base}{path}{separator}lang={language}")
                    page.wait_for_load_state("networkidle")
                    slug = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "home"
                    screenshot(
                        page, f"page-{slug}-{role or 'visitor'}-{language}-{viewport['width']}"
                    )
                    found = accessibility_violations(page)
                    if found:
                        problems[f"{path} {language} {viewport['width']}px"] = found
                    assert fits_the_screen(page) or viewport is DESKTOP, path
            page.context.close()
    assert problems == {}
