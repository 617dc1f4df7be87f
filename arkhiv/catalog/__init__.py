"""The catalog: SQLAlchemy Core tables, Alembic migrations and every query the archive makes.
No business rules live here."""
