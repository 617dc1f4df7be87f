import math
import random
from dataclasses import asdict, dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class LocationPolicy(BaseModel):
    """How precisely a site's location may be shown to roles without `precise_location`.

    Looters and artillery read public websites too, so the public sees a location snapped to a
    grid cell of `public_precision_km` (or only the named region), never the capture coordinates.
    """

    model_config = ConfigDict(extra="forbid")

    public_precision_km: float = Field(25.0, gt=0, le=1000)
    method: Literal["grid"] = "grid"
    displace: bool = Field(
        False,
        description="publish a random point inside the cell instead of its centre (drawn once, "
        "at ingest, and kept: repeated queries cannot average it away)",
    )
    log_precise_access: bool = Field(
        True,
        description="every disclosure of a precise location is written to the audit log; "
        "kept for older configuration files, it cannot be switched off",
    )

    @field_validator("log_precise_access")
    @classmethod
    def _always_logged(cls, value: bool) -> bool:
        if not value:
            raise ValueError(
                "disclosures of precise locations are always written to the audit log; "
                "remove log_precise_access or set it to true"
            )
        return value


EARTH_KM_PER_DEGREE = 111.32


@dataclass(frozen=True)
class CoarseLocation:
    """What the public may see: a grid cell (and its centre), never the capture point."""

    latitude: float  # centre of the cell
    longitude: float
    cell_km: float
    south: float
    west: float
    north: float
    east: float
    country: str | None = None

    def as_dict(self) -> dict[str, float | str | None]:
        return asdict(self)


def coarsen(
    latitude: float,
    longitude: float,
    policy: LocationPolicy,
    country: str | None = None,
    rng: random.Random | None = None,
) -> CoarseLocation:
    """Snap a point to a grid of cells about `public_precision_km` wide.

    Rows are fixed bands of latitude; in each band, cells are as many degrees of longitude as
    make the same distance at the band's middle, so cells stay ~square from the equator to the
    poles. Everyone inside a cell gets the same answer, so repeated queries reveal nothing more.
    """
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise ValueError(f"not a WGS84 position: {latitude}, {longitude}")
    step_lat = policy.public_precision_km / EARTH_KM_PER_DEGREE
    row = min(math.floor((latitude + 90) / step_lat), math.ceil(180 / step_lat) - 1)
    south = -90 + row * step_lat
    north = min(90.0, south + step_lat)
    middle = (south + north) / 2
    columns = max(1, math.floor(360 * math.cos(math.radians(middle)) / step_lat))
    step_lon = 360 / columns
    column = min(math.floor((longitude + 180) / step_lon), columns - 1)
    west = -180 + column * step_lon
    east = west + step_lon
    shown_latitude, shown_longitude = middle, (west + east) / 2
    if policy.displace:
        draw = rng or random.SystemRandom()
        shown_latitude, shown_longitude = draw.uniform(south, north), draw.uniform(west, east)
    return CoarseLocation(
        latitude=round(shown_latitude, 4),
        longitude=round(shown_longitude, 4),
        cell_km=policy.public_precision_km,
        south=round(south, 4),
        west=round(west, 4),
        north=round(north, 4),
        east=round(east, 4),
        country=country,
    )
