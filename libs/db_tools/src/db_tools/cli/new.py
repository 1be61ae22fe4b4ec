"""``db new NAME``: scaffold a new database library."""

from __future__ import annotations

from db_tools.cli.common import console, fail

__all__ = ["new_database"]


def new_database(name: str, modules: str | None, *, sync: bool = True) -> None:
    """``db new``: validate everything, write the library, its first revision, install it."""
    from db_kit.settings import workspace_root
    from db_shared.errors import DatabaseError
    from db_tools import scaffold

    root = workspace_root()
    pyproject = root / "pyproject.toml"
    if not (pyproject.exists() and (root / "libs").is_dir()):
        fail(f"{root} is not the workspace root (no pyproject.toml and libs/); run db new there.")
    scaffold.check_name(name, root)
    chosen = scaffold.choose_modules(modules, scaffold.shared_modules(root))
    plan = scaffold.Scaffold(name, root, chosen)
    registered = scaffold.register_in_workspace(pyproject.read_text(encoding="utf-8"), plan)
    scaffold.write_library(plan, registered)
    shown = ", ".join(m.package for m in chosen) or "none"
    console.print(f"Created libs/{plan.package} (shared modules: {shown}).")
    console.print(
        f"Registered {plan.distribution} in pyproject.toml (dependencies, uv sources, ruff, mypy)."
    )
    try:
        revision = scaffold.write_initial_revision(plan)
    except Exception as exc:
        from db_kit.errors import translate

        problem = translate(exc) or exc
        if not isinstance(problem, DatabaseError):
            raise
        # The library stays: it is complete but for its first revision.
        fail(
            f"{str(problem).rstrip('.')}. libs/{plan.package} was created without its initial "
            f'revision: once fixed, run `{scaffold.sync_commands()}` and `db {name} generate -m "'
            f'{scaffold.INITIAL_MESSAGE}"`.'
        )
        return
    console.print(f"Wrote the initial revision: {revision.relative_to(root)}")
    if sync:
        scaffold.install(root)
        console.print(f"Installed {plan.distribution}: `db {name} ...` is ready.")
    else:
        console.print(f"Run `{scaffold.sync_commands()}` to install it, then `db {name} ...`.")
    console.print(
        f"Next: set {plan.url_variable} (unset in development: the embedded server's "
        f'"{name}" database), then `make db-{name}-migrate`.'
    )
