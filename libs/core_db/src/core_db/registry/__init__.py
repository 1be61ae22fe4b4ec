"""The tenant registry of core_db: the ``core`` schema (tenants, plugins, super admins).

It has its own models and its own migrations: tenant schemas never receive these tables.
"""
