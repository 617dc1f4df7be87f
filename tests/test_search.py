"""Searching the catalogue through the API: text, type, country, map area and dating, with
paging."""

from __future__ import annotations

from starlette.testclient import TestClient

from arkhiv.web.app import create_app
from tests.test_oai import catalogue
from tests.test_submit import env

__all__ = ["catalogue", "env"]


def test_search_by_text_type_country_and_dating(archive, catalogue):
    with TestClient(create_app(archive, embedded_worker=False)) as client:

        def ids(**params):
            response = client.get("/api/v1/objects", params=params)
            assert response.status_code == 200, response.text
            return [entry["id"] for entry in response.json()]

        assert sorted(ids()) == sorted(catalogue)
        assert ids(q="object 3") == [catalogue[3]]  # any case
        assert len(ids(q="berlin-mitte")) == 5  # the whole record counts: here the place
        assert ids(**{"from": "1800"}) == []  # undated objects do not match a dating filter
        assert len(ids(type="building")) == 2 and len(ids(type="monument")) == 3
        assert len(ids(country="de")) == 5 and ids(country="UA") == []
        assert ids(q="100%_") == []  # wildcards are text, not patterns
        assert len(ids(limit=2)) == 2 and len(ids(limit=2, offset=4)) == 1
        assert client.get("/api/v1/objects", params={"from": "yesterday"}).status_code == 422
        first = client.get("/api/v1/objects").json()[0]
        assert first["country"] == "DE" and first["place_name"] == "Berlin-Mitte"
        assert "description" not in first
        # The public grid cell only (the catalogue's map draws it), as the object's record has.
        cell = first["public_location"]
        assert set(cell) == {
            "latitude",
            "longitude",
            "cell_km",
            "south",
            "west",
            "north",
            "east",
            "country",
        }
        assert cell["cell_km"] == archive.settings.location.public_precision_km


def test_dating_bounds_and_map_areas(archive, catalogue):
    """Dating bounds take whole years and months; a map area finds the objects whose public
    cell meets it (one catalogue for both: it takes a while to build)."""
    from arkhiv.jobs.archiving import describe_object

    describe_object(archive, catalogue[0], {"date_start": "1900-05-01"}, "curator")
    describe_object(archive, catalogue[1], {"date_start": "1850", "date_end": "1899"}, "curator")
    with TestClient(create_app(archive, embedded_worker=False)) as client:

        def ids(**params):
            response = client.get("/api/v1/objects", params=params)
            assert response.status_code == 200, response.text
            return sorted(entry["id"] for entry in response.json())

        both = sorted(catalogue[:2])
        assert ids(to="1900") == both  # 1900-05-01 is in 1900
        assert ids(to="1900-05") == both and ids(to="1900-04") == [catalogue[1]]
        assert ids(**{"from": "1900"}) == [catalogue[0]]
        assert ids(**{"from": "1900-06"}) == []
        assert ids(**{"from": "1899", "to": "1899"}) == [catalogue[1]]  # overlaps 1850-1899
        assert ids(**{"from": "1860", "to": "1870"}) == [catalogue[1]]

        cell = client.get("/api/v1/objects").json()[0]["public_location"]
        everything = sorted(catalogue)
        assert ids(bbox="13,52,14,53") == everything  # Berlin
        assert ids(bbox="20,40,30,50") == []
        # A box that only touches the cell's corner still meets it.
        corner = f"{cell['east']},{cell['north']},{cell['east'] + 1},{cell['north'] + 1}"
        assert ids(bbox=corner) == everything
        beside = f"{cell['east'] + 0.01},{cell['south']},{cell['east'] + 1},{cell['north']}"
        assert ids(bbox=beside) == []
        assert ids(bbox="170,52,14,53") == everything  # across the antimeridian, to Berlin
        assert ids(bbox="170,52,-170,53") == []
        assert ids(bbox="-347,52,-346,53") == everything  # a map panned once round the world
        assert ids(bbox="13,52,14,53", to="1900") == both  # with the other filters
        for bad in ("1,2,3", "13,53,14,52", "a,b,c,d", "13,52,14,nan"):
            refused = client.get("/api/v1/objects", params={"bbox": bad})
            assert refused.status_code == 422 and "bbox" in refused.text, bad
