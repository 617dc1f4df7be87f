from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LocationPolicy(BaseModel):
    """How precisely a site's location may be shown to roles without `precise_location`.

    Looters and artillery read public websites too, so the public sees a location snapped to a
    grid cell of `public_precision_km` (or only the named region), never the capture coordinates.
    """

    model_config = ConfigDict(extra="forbid")

    public_precision_km: float = Field(25.0, gt=0, le=1000)
    method: Literal["grid", "region-name"] = "grid"
    log_precise_access: bool = Field(
        True, description="write every disclosure of a precise location to the audit log"
    )
