"""Entrypoint of the migration container: deploy the chosen databases, exit 0 or 1.

The work is ``db_tools.remote.main`` (tested there); this file only runs it. Usage::

    python run_migrations/entrypoint.py [core,bibikos | core bibikos | all]

With no argument, ``MIGRATE_DATABASES`` chooses (empty: every installed database).
"""

import sys

from db_tools.remote import main

# Guarded: schema-per-tenant workers are spawned processes that re-import __main__.
if __name__ == "__main__":
    sys.exit(main())
