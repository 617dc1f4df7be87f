from pydantic import BaseModel, ConfigDict, Field

GIB = 1024**3


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
