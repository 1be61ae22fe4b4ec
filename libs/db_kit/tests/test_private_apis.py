"""The one private library API the kit relies on fails loudly here if a release changes it.

``db_kit.engine.cache_schema_translation`` memoises SQLAlchemy's per-execution schema
rewrite (``IdentifierPreparer._render_schema_translates``). If SQLAlchemy renames it, the
kit keeps working (translation stays correct) but loses the speed: this test says so.
"""

from __future__ import annotations

from sqlalchemy import Column, Engine, Integer, MetaData, Table, create_engine, select
from sqlalchemy.sql.compiler import IdentifierPreparer

from db_kit.engine import cache_schema_translation


def test_sqlalchemy_still_has_the_schema_translation_hook() -> None:
    hook = getattr(IdentifierPreparer, "_render_schema_translates", None)
    assert callable(hook), (
        "SQLAlchemy no longer has IdentifierPreparer._render_schema_translates: "
        "db_kit.engine.cache_schema_translation now does nothing; find the new hook."
    )


def _render(engine: Engine) -> str:
    table = Table("t", MetaData(), Column("id", Integer))
    translate = {None: "tenant_acme"}
    compiled = select(table).compile(dialect=engine.dialect, schema_translate_map=translate)
    # What an execution does with the cached string: the preparer rewrites it per map.
    rendered: str = compiled.preparer._render_schema_translates(compiled.string, dict(translate))  # type: ignore[attr-defined]
    return rendered


def test_the_cache_is_installed_and_renders_like_sqlalchemy() -> None:
    plain = create_engine("postgresql+psycopg://u@127.0.0.1:1/db")
    cached = create_engine("postgresql+psycopg://u@127.0.0.1:1/db")
    cache_schema_translation(cached)
    assert getattr(type(cached.dialect.identifier_preparer), "_db_kit_cached", False)
    expected = _render(plain)
    assert "tenant_acme.t" in expected
    assert _render(cached) == expected
    assert _render(cached) == expected  # from the cache the second time
    plain.dispose()
    cached.dispose()
