"""Searching the catalogue through the API: text, type, country and dating, with paging."""

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
