import math

import pytest

from arkhiv.policies.location import EARTH_KM_PER_DEGREE, LocationPolicy, coarsen

POLICY = LocationPolicy(public_precision_km=25)


def distance_km(lat1, lon1, lat2, lon2):
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371 * math.asin(math.sqrt(a))


@pytest.mark.parametrize(
    ("lat", "lon"),
    [
        (50.4501, 30.5234),
        (46.4825, 30.7233),
        (-33.8688, 151.2093),
        (0.0, 0.0),
        (89.99, 179.99),
        (-89.99, -179.99),
        (64.1466, -21.9426),
    ],
)
def test_cell_contains_the_point_and_is_about_the_policy_size(lat, lon):
    cell = coarsen(lat, lon, POLICY)
    assert cell.south <= lat <= cell.north and cell.west <= lon <= cell.east
    height_km = (cell.north - cell.south) * EARTH_KM_PER_DEGREE
    assert height_km == pytest.approx(25, abs=0.1) or cell.north == 90 or cell.south == -90
    if abs(lat) < 80:
        middle = (cell.north + cell.south) / 2
        width_km = distance_km(middle, cell.west, middle, cell.east)
        assert 24.5 <= width_km < 50  # ~25 km: the two Earth models differ by 0.1%


def test_everyone_in_a_cell_gets_the_same_answer():
    near = [coarsen(50.45 + d, 30.52 + d, POLICY) for d in (0.0, 0.001, 0.002)]
    assert len({(c.latitude, c.longitude) for c in near}) == 1


def test_the_published_point_is_not_the_site():
    lat, lon = 50.4501, 30.5234
    cell = coarsen(lat, lon, POLICY)
    assert (cell.latitude, cell.longitude) != (lat, lon)
    assert distance_km(lat, lon, cell.latitude, cell.longitude) < 25


def test_precision_follows_the_policy():
    coarse = coarsen(50.4501, 30.5234, LocationPolicy(public_precision_km=100))
    assert (coarse.north - coarse.south) * EARTH_KM_PER_DEGREE == pytest.approx(100, abs=0.1)


def test_rejects_impossible_positions():
    with pytest.raises(ValueError):
        coarsen(91, 0, POLICY)


def test_displacement_stays_in_the_cell_and_varies():
    policy = LocationPolicy(public_precision_km=25, displace=True)
    lat, lon = 50.4501, 30.5234
    shown = [coarsen(lat, lon, policy) for _ in range(50)]
    cell = coarsen(lat, lon, POLICY)
    assert all(s.south == cell.south and s.east == cell.east for s in shown)
    assert all(
        cell.south <= s.latitude <= cell.north and cell.west <= s.longitude <= cell.east
        for s in shown
    )
    assert len({(s.latitude, s.longitude) for s in shown}) > 40
