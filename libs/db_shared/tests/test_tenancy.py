"""The tenant context API: slug rules, the context variable, its managers and decorator."""

from __future__ import annotations

import asyncio
import contextvars
import pickle
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from db_shared import (
    ConfigurationError,
    DatabaseError,
    InvalidTenantError,
    NotFoundError,
    Tenant,
    TenantRequiredError,
    UnknownTenantError,
    as_tenant,
    current_tenant,
    current_tenant_or_none,
    tenant_bound,
    tenant_context,
    validate_tenant_slug,
    with_tenant,
)


@pytest.fixture(autouse=True)
def _no_tenant_leaks() -> Iterator[None]:
    # Every test starts and must end outside any tenant context.
    assert current_tenant_or_none() is None
    yield
    assert current_tenant_or_none() is None


def slug() -> str | None:
    found = current_tenant_or_none()
    return None if found is None else found.slug


# --- slug rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["a", "acme", "acme_corp", "t2", "a" * 40, "publicity", "core2", "pgx", "us", "eu"]
)
def test_valid_slugs_are_accepted(value: str) -> None:
    assert validate_tenant_slug(value) == value
    assert Tenant(value).slug == value


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ('x";DROP SCHEMA core;--', "a-z, 0-9 and _"),
        ("a,public", "a-z, 0-9 and _"),
        ("pg_catalog", "reserved"),
        ("pg_toast", "reserved"),
        ("a" * 41, "at most 40 characters (got 41)"),
        ("a" * 64, "63-byte"),
        ("Acme", "lower-case letter"),
        ("a'b", "a-z, 0-9 and _"),
        ("", "must not be empty"),
        ("public", "reserved"),
        ("core", "reserved"),
        ("information_schema", "reserved"),
        ("template0", "reserved"),
        ("template1", "reserved"),
        ("postgres", "reserved"),
        ("1acme", "starts with a lower-case letter"),
        ("_acme", "starts with a lower-case letter"),
        ("acme-corp", "a-z, 0-9 and _"),
        ("acme\n", "a-z, 0-9 and _"),
        ("acme ", "a-z, 0-9 and _"),
        ("acmé", "a-z, 0-9 and _"),
        ("ａcme", "a-z, 0-9 and _"),  # fullwidth a  # noqa: RUF001
        ("acme\x00", "a-z, 0-9 and _"),
    ],
)
def test_unsafe_slugs_are_refused_naming_value_and_rule(value: str, rule: str) -> None:
    with pytest.raises(InvalidTenantError) as caught:
        validate_tenant_slug(value)
    message = str(caught.value)
    assert rule in message
    assert repr(value)[:40] in message
    assert caught.value.value == value
    with pytest.raises(InvalidTenantError):
        Tenant(value)
    with pytest.raises(InvalidTenantError):
        tenant_context(value)


def test_refused_value_is_shown_truncated_to_80_characters() -> None:
    huge = "x;" * 500_000
    with pytest.raises(InvalidTenantError) as caught:
        validate_tenant_slug(huge)
    shown = str(caught.value).split("Invalid tenant slug ", 1)[1].split(": a tenant slug", 1)[0]
    assert len(shown) == 80
    assert shown.endswith("...")
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("value", [None, 42, b"acme", ["acme"]])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(InvalidTenantError, match="must be a string"):
        validate_tenant_slug(value)


def test_error_types_fit_the_hierarchy() -> None:
    assert issubclass(InvalidTenantError, DatabaseError)
    assert issubclass(InvalidTenantError, ValueError)
    # An unknown tenant is a not-found: apps answer it 404 even before they map it.
    assert issubclass(UnknownTenantError, NotFoundError)
    assert str(UnknownTenantError("acme")) == "Tenant 'acme' was not found"
    # Code that needs a tenant and has none is misconfigured, like an unbound token.
    assert issubclass(TenantRequiredError, ConfigurationError)
    assert issubclass(TenantRequiredError, LookupError)


# --- Tenant -------------------------------------------------------------------------------


def test_tenant_is_frozen_hashable_and_picklable() -> None:
    acme = Tenant("acme", region="eu", data={"plan": "pro"})
    same = Tenant("acme", region="eu", data={"plan": "pro"})
    assert acme == same
    assert {acme, same} == {acme}
    assert acme != Tenant("acme", region="us")
    with pytest.raises(AttributeError):
        acme.slug = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        acme.data["plan"] = "free"  # type: ignore[index]
    # Tenants cross process boundaries (migrations run per tenant in processes).
    assert pickle.loads(pickle.dumps(acme)) == acme  # noqa: S301  # our own bytes
    assert Tenant("acme").data == {}


def test_tenant_data_is_a_copy_of_what_was_passed() -> None:
    extras = {"plan": "pro"}
    acme = Tenant("acme", data=extras)
    extras["plan"] = "free"
    assert acme.data["plan"] == "pro"


def test_as_tenant_accepts_a_tenant_or_a_slug() -> None:
    acme = Tenant("acme", region="eu")
    assert as_tenant(acme) is acme
    assert as_tenant("acme") == Tenant("acme")


# --- the current tenant -------------------------------------------------------------------


def test_current_tenant_without_one_says_how_to_set_it() -> None:
    with pytest.raises(TenantRequiredError) as caught:
        current_tenant()
    message = str(caught.value)
    for fix in ("TenantMiddleware", "tenant_context(", "@with_tenant(", "copy_context().run"):
        assert fix in message
    assert current_tenant_or_none() is None


def test_context_manager_nests_and_restores() -> None:
    with tenant_context("acme") as outer:
        assert outer == Tenant("acme")
        assert current_tenant() == outer
        with tenant_context(Tenant("globex", region="eu")) as inner:
            assert current_tenant() is inner
            with tenant_context("initech"):
                assert slug() == "initech"
            assert slug() == "globex"
        assert slug() == "acme"
    assert current_tenant_or_none() is None


def test_context_manager_restores_after_an_exception() -> None:
    def fail_inside_globex() -> None:
        with tenant_context("globex"):
            assert slug() == "globex"
            raise RuntimeError("boom")

    with tenant_context("acme"):
        with pytest.raises(RuntimeError, match="boom"):
            fail_inside_globex()
        assert slug() == "acme"
    assert slug() is None


def test_one_context_manager_instance_can_be_reentered() -> None:
    acme = tenant_context("acme")
    with acme, tenant_context("globex"), acme:
        assert slug() == "acme"
    assert slug() is None


def test_async_context_manager_nests_and_restores() -> None:
    async def scenario() -> list[str | None]:
        seen = []
        async with tenant_context("acme"):
            seen.append(slug())
            try:
                async with tenant_context("globex"):
                    seen.append(slug())
                    raise KeyError("boom")
            except KeyError:
                pass
            seen.append(slug())
        seen.append(slug())
        return seen

    assert asyncio.run(scenario()) == ["acme", "globex", "acme", None]


# --- the decorator ------------------------------------------------------------------------


def test_decorator_on_a_sync_function() -> None:
    @with_tenant("acme")
    def report(suffix: str) -> str:
        """Docstring kept."""
        return current_tenant().slug + suffix

    assert report("!") == "acme!"
    assert report.__name__ == "report"
    assert report.__doc__ == "Docstring kept."
    assert slug() is None
    with tenant_context("globex"):
        assert report("?") == "acme?"
        assert slug() == "globex"


def test_decorator_on_an_async_function() -> None:
    @with_tenant(Tenant("acme", region="eu"))
    async def report() -> str | None:
        await asyncio.sleep(0)
        return current_tenant().region

    assert asyncio.iscoroutinefunction(report)
    assert asyncio.run(report()) == "eu"
    assert slug() is None


def test_decorator_resolves_the_tenant_from_the_arguments() -> None:
    @dataclass
    class Job:
        tenant_slug: str

    @with_tenant(lambda job: job.tenant_slug)
    def run(job: Job) -> str:
        return current_tenant().slug

    async def lookup(job: Job) -> str:
        await asyncio.sleep(0)
        return job.tenant_slug.removesuffix("_job")

    @with_tenant(lookup)
    async def run_async(job: Job) -> str:
        return current_tenant().slug

    assert run(Job("acme")) == "acme"
    assert asyncio.run(run_async(Job("globex_job"))) == "globex"
    with pytest.raises(InvalidTenantError):
        run(Job("a,public"))
    with pytest.raises(InvalidTenantError):
        with_tenant("pg_catalog")  # a bad literal fails where it is written


def test_decorator_restores_after_an_exception() -> None:
    @with_tenant("acme")
    def fail() -> None:
        raise ValueError("boom")

    @with_tenant("acme")
    async def fail_async() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        fail()
    with pytest.raises(ValueError, match="boom"):
        asyncio.run(fail_async())
    assert slug() is None


def test_decorator_refuses_what_it_cannot_wrap() -> None:
    def gen() -> object:
        yield current_tenant()

    async def agen() -> object:
        yield current_tenant()

    with pytest.raises(TypeError, match="generator"):
        with_tenant("acme")(gen)
    with pytest.raises(TypeError, match="generator"):
        with_tenant("acme")(agen)

    async def lookup() -> str:
        return "acme"

    sync_with_async_resolver = with_tenant(lookup)(lambda: None)
    with pytest.raises(TypeError, match="resolver"):
        sync_with_async_resolver()


# --- the context follows tasks and to_thread, not raw threads -----------------------------


def test_one_hundred_concurrent_tasks_each_see_only_their_tenant() -> None:
    async def worker(index: int) -> list[tuple[int, str]]:
        seen = []
        async with tenant_context(f"tenant_{index}"):
            for _ in range(20):
                await asyncio.sleep(0)
                seen.append((index, current_tenant().slug))
                if random.random() < 0.3:
                    await asyncio.sleep(random.random() / 1000)
        assert current_tenant_or_none() is None
        return seen

    async def scenario() -> list[list[tuple[int, str]]]:
        return await asyncio.gather(*(worker(i) for i in range(100)))

    results = asyncio.run(scenario())
    assert len(results) == 100
    for seen in results:
        assert len(seen) == 20
        assert all(found == f"tenant_{index}" for index, found in seen)


def test_tasks_inherit_the_tenant_but_cannot_change_the_parents() -> None:
    async def child() -> str:
        parent = current_tenant().slug
        with tenant_context("child"):
            await asyncio.sleep(0)
        return parent

    async def child_that_sets() -> None:
        # No reset: the change dies with the task's copy of the context.
        tenant_context("leaked").__enter__()

    async def scenario() -> tuple[str, str, str]:
        async with tenant_context("acme"):
            task = asyncio.create_task(child())
            await asyncio.create_task(child_that_sets())
            (gathered,) = await asyncio.gather(child())
            return await task, gathered, current_tenant().slug

    assert asyncio.run(scenario()) == ("acme", "acme", "acme")


def test_to_thread_sees_the_tenant() -> None:
    async def scenario() -> tuple[str | None, str | None]:
        async with tenant_context("acme"):
            in_thread = await asyncio.to_thread(slug)
        after = await asyncio.to_thread(slug)
        return in_thread, after

    assert asyncio.run(scenario()) == ("acme", None)


def run_in_thread(target: Callable[[], object]) -> object:
    box: list[object] = []
    thread = threading.Thread(target=lambda: box.append(target()))
    thread.start()
    thread.join(timeout=10)
    return box[0]


def test_a_plain_thread_does_not_see_the_tenant() -> None:
    with tenant_context("acme"):
        assert run_in_thread(slug) is None
        # The documented fixes: run the thread in a copy of the context, or bind the fn.
        context = contextvars.copy_context()
        assert run_in_thread(lambda: context.run(slug)) == "acme"
        assert run_in_thread(tenant_bound(slug)) == "acme"


def test_tenant_bound_needs_a_tenant_now() -> None:
    with pytest.raises(TenantRequiredError):
        tenant_bound(slug)
