"""An index on calls.finished_at: retention deletes the calls finished before a time, in batches,
and without it each batch would read the whole table. Made only where missing: a database made
before migrations by `metadata.create_all` may have it already."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = {index["name"] for index in sa.inspect(op.get_bind()).get_indexes("calls")}
    if "ix_calls_finished_at" not in existing:
        op.create_index("ix_calls_finished_at", "calls", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_calls_finished_at", table_name="calls")
