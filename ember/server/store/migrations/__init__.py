"""Alembic migrations of the store's schema (ember/server/store/migrate.py runs them)."""
