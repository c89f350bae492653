"""Render docs/store.md, the schema reference, from the migrations (the only source of truth).

Regenerate after adding a migration::

    python -m dramaturg.memory._schema_doc > docs/store.md
"""

from __future__ import annotations

import sys

from dramaturg.memory._migrations import MIGRATIONS

__all__ = ["render"]


def render() -> str:
    parts = [
        "# The store: schema reference",
        "",
        "Generated from `memory/_migrations.py` by `python -m dramaturg.memory._schema_doc`;",
        "a test fails when it is stale. Migrations apply in order and are recorded in",
        "`schema_migrations`.",
        "",
    ]
    for migration in MIGRATIONS:
        parts += [
            f"## {migration.version:03d} {migration.name}",
            "",
            "```sql",
            migration.sql.strip(),
            "```",
            "",
        ]
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(render())
