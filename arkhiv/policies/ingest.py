from pydantic import BaseModel, ConfigDict, Field

from arkhiv.policies.resources import (
    DEFAULT_MAX_DECODED_RATIO,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_MESH_ELEMENTS,
    DEFAULT_MAX_POINTS,
    DEFAULT_MEMORY_BUDGET_BYTES,
    GIB,
    ResourceLimits,
)


class IngestPolicy(BaseModel):
    """Limits a submission must respect, so that one hostile or broken package cannot fill the
    disk, exhaust inodes or hang a worker."""

    model_config = ConfigDict(extra="forbid")

    max_package_bytes: int = Field(200 * GIB, gt=0, description="unpacked size of one package")
    max_files: int = Field(100_000, gt=0, description="files in one package")
    max_compression_ratio: float = Field(
        200.0, gt=1, description="unpacked/packed size above which an archive is a zip bomb"
    )
    max_path_length: int = Field(1024, gt=0, description="characters in one path inside a bag")
    # Decompression bombs inside files (policies/resources.py): every reader checks the counts a
    # file declares against these before it decodes anything.
    memory_budget_bytes: int = Field(
        DEFAULT_MEMORY_BUDGET_BYTES,
        gt=0,
        description="what reading one file may allocate; files that would need more to be read "
        "whole are not loaded at ingest (figures from headers) and are refused by reconstruction",
    )
    max_decoded_ratio: float = Field(
        DEFAULT_MAX_DECODED_RATIO,
        gt=1,
        description="declared decoded size / stored size of compressed geometry (LAZ, E57 "
        "compressed vectors, Draco, meshopt, zip members of USDZ) above which a file is a "
        "decompression bomb; decoded sizes under 64 MiB are never refused for their ratio",
    )
    max_points: int = Field(
        DEFAULT_MAX_POINTS, gt=0, description="points one point cloud may declare"
    )
    max_mesh_elements: int = Field(
        DEFAULT_MAX_MESH_ELEMENTS, gt=0, description="vertices or faces one mesh may declare"
    )
    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS,
        gt=0,
        description="pixels one picture may declare (width x height); Pillow's MAX_IMAGE_PIXELS "
        "is lowered to it where it is lower, never raised",
    )
    virus_scan_max_file_bytes: int = Field(
        2 * GIB - 1, gt=0, le=2 * GIB - 1, description="ClamAV cannot scan files of 2 GiB or more"
    )
    virus_scan_max_scan_bytes: int = Field(
        4 * GIB, gt=0, description="data ClamAV reads from one file, archives unpacked included"
    )
    clamd_socket: str | None = Field(
        None,
        description="clamd's UNIX socket; without it clamscan is run. clamd.conf must say "
        "AlertExceedsMax yes (else clamd passes files over its limits as clean) and should say "
        "AlertEncryptedArchive yes",
    )
    clamav_database: str | None = Field(
        None,
        description="signature database (a directory or one file) given to clamscan as "
        "--database; None: ClamAV's default. clamd loads its own, set in clamd.conf",
    )
    virus_scan_images_by_fuzzy_hash: bool = Field(
        False,
        description="decode every picture to compare it with ClamAV's fuzzy image hashes "
        "(signatures of known phishing and scam pictures). Off: it makes photo sets about 6x "
        "slower to scan and finds no malicious code; the byte and logical signatures that match "
        "exploits in image files run either way. clamd: ScanImageFuzzyHash in clamd.conf",
    )
    reject_unscannable: bool = Field(
        False,
        description="reject a package with a file ClamAV could not scan (2 GiB or more, over "
        "the scan limits, encrypted) instead of accepting it with a warning",
    )
    quarantine_retention_days: float = Field(90, gt=0)

    def resource_limits(self) -> ResourceLimits:
        """The limits readers take (plain data: readers need not know the policy)."""
        return ResourceLimits(
            memory_budget_bytes=self.memory_budget_bytes,
            max_decoded_ratio=self.max_decoded_ratio,
            max_points=self.max_points,
            max_mesh_elements=self.max_mesh_elements,
            max_image_pixels=self.max_image_pixels,
        )
