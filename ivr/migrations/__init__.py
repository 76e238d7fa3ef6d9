"""Alembic migrations for the call records (`ivr db upgrade`); see `ivr/migrate.py`."""
