"""Ingest: from a SIP (bag, zip, tar, upload) to a checked Submission: validation, virus
check, format identification, characterization, location sequestering."""
