"""The HTTP face: API (FastAPI) and, later, pages."""
