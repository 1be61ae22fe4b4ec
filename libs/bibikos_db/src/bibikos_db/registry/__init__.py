"""The tenant registry of bibikos_db: the ``control`` schema of the bibikos database.

Each tenant's data lives in a database of its own; the control database (the one
`BIBIKOS_DATABASE_URL` names) holds which tenants exist, where their databases are, their
domains, plugins, super admins and the audit of every change. It has its own models and
migrations (`db bibikos registry migrate`): tenant databases never receive these tables.
"""
