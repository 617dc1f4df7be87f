"""Metadata documents: METS, PREMIS, CIDOC-CRM/CRMdig. Pure functions, no I/O beyond
reading schemas."""
