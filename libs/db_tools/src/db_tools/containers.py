"""Docker for the image builds and the container tests: an engine, stand-ins, BuildKit builds.

* ``ensure_engine()``: a Docker engine that answers. Debian's ``docker.io`` and
  ``docker-compose`` are installed as root when missing (never upgrading a PostgreSQL
  package), and ``dockerd`` is started when none answers; ``Engine.stop()`` stops only a
  daemon this process started.
* ``ensure_image()``: a public image the repository's files name (``python:3.11-slim``,
  ``postgres:17``): present, else pulled, else, when no registry answers, a local stand-in
  built from Debian packages and tagged with that name, so the Dockerfiles and compose files
  users run stay the ordinary ones. The Debian mirror comes from the host's apt sources.
* ``build_image()``: BuildKit builds, the host's CA bundle handed in as the ``ca_bundle``
  build secret (a TLS-inspecting proxy re-signs pip's and uv's HTTPS); a secret is mounted
  for one ``RUN`` only and never lands in a layer.

``python -m db_tools.containers`` (``make images``) builds the repository's images that way
and prints their sizes; a dockerd it started keeps running for ``docker compose up``.
Nothing at run time imports this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from db_kit.settings import workspace_root
from db_tools.watchdog import after_exit

ENGINE_PACKAGES = ("docker.io", "docker-compose")
INSTALL_TIMEOUT = 300.0  # apt-get update + install on a fresh machine
START_TIMEOUT = 60.0  # dockerd answering after it was started
PULL_TIMEOUT = 120.0
BUILD_TIMEOUT = 900.0
CA_SECRET = "ca_bundle"  # noqa: S105 (the build secret's id, not a secret)
# A local name for the Debian root file system the stand-ins start from; never pushed.
DEBIAN_BASE = "data-layer/debian-minbase"
STAND_IN_LABEL = "org.data-layer.stand-in"
PYTHON_IMAGE = "python:3.11-slim"
POSTGRES_IMAGE = "postgres:17"


class ContainersUnavailable(RuntimeError):
    """Docker cannot be used here; the message says why (tests skip with it)."""


def _run(
    args: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        input=input.decode() if input is not None else None,
        stdin=None if input is not None else subprocess.DEVNULL,
        check=False,
    )
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(
            result.returncode, list(args), result.stdout, result.stderr
        )
    return result


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# Debian packages -----------------------------------------------------------------------


def _apt_env() -> dict[str, str]:
    return {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def install_debian_packages(packages: Sequence[str], timeout: float = INSTALL_TIMEOUT) -> None:
    """Install ``packages`` with apt-get as root, refusing any plan that upgrades or removes a
    PostgreSQL package (a server from Debian may be serving other tests)."""
    if os.geteuid() != 0:
        raise ContainersUnavailable(f"{', '.join(packages)} missing; installing them needs root")
    if shutil.which("apt-get") is None:
        raise ContainersUnavailable(f"{', '.join(packages)} missing and there is no apt-get")
    lock = ["-o", "DPkg::Lock::Timeout=60"]
    deadline = time.monotonic() + timeout
    try:
        _run(["apt-get", "update", "-qq", *lock], timeout=timeout, env=_apt_env())
        plan = _run(
            ["apt-get", "install", "-s", "--no-install-recommends", *packages],
            timeout=max(deadline - time.monotonic(), 1),
            env=_apt_env(),
        ).stdout
        # "Inst pkg [old] (new ...)" is an upgrade; "Remv pkg" a removal.
        touched = re.findall(r"^(?:Inst (\S*postgres\S*) \[|Remv (\S*postgres\S*))", plan, re.M)
        if touched:
            names = sorted({a or b for a, b in touched})
            raise ContainersUnavailable(
                f"installing {', '.join(packages)} would upgrade or remove {', '.join(names)}"
            )
        _run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *lock, *packages],
            timeout=max(deadline - time.monotonic(), 1),
            env=_apt_env(),
        )
    except subprocess.CalledProcessError as exc:
        raise ContainersUnavailable(
            f"apt-get install {' '.join(packages)} failed:\n{_tail(exc.stderr or exc.stdout)}"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ContainersUnavailable(f"apt-get took over {timeout:.0f} s") from exc


# The engine ----------------------------------------------------------------------------


def _docker_clis() -> list[str]:
    found: list[str] = []
    for folder in [*os.get_exec_path(), "/usr/bin"]:
        path = Path(folder) / "docker"
        if path.is_file() and os.access(path, os.X_OK):
            real = str(path.resolve())
            if real not in found:
                found.append(real)
    return found


def _can_buildkit(cli: str) -> bool:
    """Whether ``cli build`` can use BuildKit: through buildx, or (a client older than 23)
    through its own client with ``DOCKER_BUILDKIT=1``."""
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        if _run([cli, "buildx", "version"], timeout=10, check=False).returncode == 0:
            return True
        # Exits 1 while no daemon answers, after printing the client's version.
        version = _run(
            [cli, "version", "--format", "{{.Client.Version}}"], timeout=10, check=False
        ).stdout
        major = re.match(r"\s*(\d+)\.", version)
        return bool(major and int(major.group(1)) < 23)
    return False


def _answers(cli: str) -> bool:
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        result = _run([cli, "version", "--format", "{{.Server.Version}}"], timeout=10, check=False)
        return result.returncode == 0 and bool(result.stdout.strip())
    return False


def _compose_command(cli: str) -> list[str] | None:
    """``docker compose`` (v2) when the plugin is there, else ``docker-compose`` (v1)."""
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        if _run([cli, "compose", "version"], timeout=10, check=False).returncode == 0:
            return [cli, "compose"]
    v1 = shutil.which("docker-compose")
    return [v1] if v1 else None


@dataclass
class Engine:
    """A Docker engine that answers, with a BuildKit-capable CLI and a compose command."""

    docker: str
    compose: list[str]
    started: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def run(
        self,
        *args: str,
        timeout: float = 120,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``docker ARGS`` with BuildKit on; raises CalledProcessError when ``check``."""
        full_env = {**os.environ, "DOCKER_BUILDKIT": "1", **(env or {})}
        return _run([self.docker, *args], timeout=timeout, env=full_env, check=check)

    def image_exists(self, name: str) -> bool:
        return self.run("image", "inspect", name, check=False, timeout=30).returncode == 0

    def image_size(self, name: str) -> int:
        """Bytes, as ``docker images`` counts them (every layer of the image)."""
        return int(self.run("image", "inspect", "--format", "{{.Size}}", name).stdout.strip())

    def stop(self, timeout: float = 30) -> None:
        """Stop dockerd if this process started it (never a daemon found running)."""
        process, self.started = self.started, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _watchdog(owner: int, dockerd: int) -> None:
    """Stop the dockerd we started when ``owner`` ends, however it ends; checks the pid is
    still that dockerd, so a reused pid is never signalled."""
    ours = f"grep -qa dockerd /proc/{dockerd}/cmdline 2>/dev/null"
    after_exit(owner, f"{ours} && kill -TERM {dockerd}", while_alive=ours)


def ensure_engine(
    *, install: bool = True, start_timeout: float = START_TIMEOUT, outlive: bool = False
) -> Engine:
    """A Docker engine that answers; installs and starts one when allowed and needed.

    A dockerd started here stops when this process ends (a watchdog), unless ``outlive``.

    Raises ``ContainersUnavailable`` with the reason when there cannot be one here.
    """
    began = time.monotonic()
    timings: dict[str, float] = {}
    missing = [] if shutil.which("dockerd") or any(map(_answers, _docker_clis())) else ["docker.io"]
    if not shutil.which("docker-compose") and not any(
        _run([c, "compose", "version"], timeout=10, check=False).returncode == 0
        for c in _docker_clis()
    ):
        missing.append("docker-compose")
    if missing:
        if not install:
            raise ContainersUnavailable(f"{', '.join(missing)} not installed")
        install_debian_packages(missing)
        timings["install"] = time.monotonic() - began
    clis = [c for c in _docker_clis() if _can_buildkit(c)]
    if not clis:
        raise ContainersUnavailable(
            "no docker CLI here can build with BuildKit (install buildx, or Debian's docker.io)"
        )
    cli = clis[0]
    engine = Engine(docker=cli, compose=[], timings=timings)
    if not _answers(cli):
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise ContainersUnavailable("no Docker engine answers and dockerd is not installed")
        if os.geteuid() != 0:
            raise ContainersUnavailable("no Docker engine answers; starting dockerd needs root")
        log = Path(tempfile.mkdtemp(prefix="dockerd_")) / "dockerd.log"
        started_at = time.monotonic()
        with log.open("wb") as out:
            engine.started = subprocess.Popen(
                [dockerd, "--pidfile", str(log.parent / "dockerd.pid")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        engine.log = log
        if not outlive:
            _watchdog(os.getpid(), engine.started.pid)
        deadline = time.monotonic() + start_timeout
        while not _answers(cli):
            if engine.started.poll() is not None or time.monotonic() > deadline:
                engine.stop()
                raise ContainersUnavailable(
                    f"dockerd did not answer within {start_timeout:.0f} s:\n"
                    f"{_tail(log.read_text(errors='replace'))}"
                )
            time.sleep(0.2)
        timings["start"] = time.monotonic() - started_at
    compose = _compose_command(cli)
    if compose is None:
        engine.stop()
        raise ContainersUnavailable("neither `docker compose` nor `docker-compose` is installed")
    engine.compose = compose
    return engine


# Stand-ins for public images -----------------------------------------------------------


@dataclass(frozen=True)
class AptSource:
    """One deb822 stanza (or sources.list line) of the host's apt configuration."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]

    def as_deb822(self) -> str:
        return (
            f"Types: deb\nURIs: {self.uri}\nSuites: {' '.join(self.suites)}\n"
            f"Components: {' '.join(self.components)}\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )


def host_codename() -> str:
    text = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", text, re.M)
    return match.group(1) if match else "bookworm"


def host_debian_sources(codename: str, etc: Path = Path("/etc/apt")) -> list[AptSource]:
    """The host's Debian sources for ``codename`` (its own suites only: third-party
    repositories name other suites and need keys the stand-ins do not have)."""
    ours = {codename, f"{codename}-updates", f"{codename}-security"}
    found: list[AptSource] = []
    for path in sorted(etc.glob("sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(
                (key.strip().lower(), value.strip())
                for key, _, value in (
                    line.partition(":")
                    for line in stanza.splitlines()
                    if line.strip() and not line.lstrip().startswith("#") and ":" in line
                )
            )
            if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
                continue
            suites = tuple(s for s in fields.get("suites", "").split() if s in ours)
            for uri in fields.get("uris", "").split():
                if suites:
                    found.append(AptSource(uri, suites, tuple(fields["components"].split())))
    lists = [etc / "sources.list", *sorted(etc.glob("sources.list.d/*.list"))]
    for path in lists:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            match = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)", line)
            if match and match.group(2) in ours:
                uri, suite, components = match.groups()
                found.append(AptSource(uri, (suite,), tuple(components.split())))
    return found


def debian_base_image(engine: Engine, codename: str | None = None) -> str:
    """A minimal Debian root file system as a local image (``debootstrap`` + ``docker
    import``), its apt pointed at the host's mirrors; built once and kept."""
    codename = codename or host_codename()
    name = f"{DEBIAN_BASE}:{codename}"
    if engine.image_exists(name):
        return name
    sources = host_debian_sources(codename)
    mirror = next((s.uri for s in sources if codename in s.suites), None)
    if mirror is None:
        raise ContainersUnavailable(
            f"no Debian mirror for {codename} in the host's apt sources (/etc/apt)"
        )
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        install_debian_packages(["debootstrap"])
        debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="stand_in_rootfs_"))
    try:
        _run(
            [debootstrap, "--variant=minbase", codename, str(root), mirror],
            timeout=INSTALL_TIMEOUT,
        )
        apt = root / "etc" / "apt"
        (apt / "sources.list").unlink(missing_ok=True)
        (apt / "sources.list.d" / "debian.sources").write_text(
            "\n".join(s.as_deb822() for s in sources)
        )
        shutil.rmtree(root / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        shutil.rmtree(root / "var" / "lib" / "apt" / "lists", ignore_errors=True)
        tar = subprocess.Popen(
            ["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
        )
        assert tar.stdout is not None
        imported = subprocess.run(
            [engine.docker, "import", "--change", 'CMD ["bash"]', "-", name],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
        tar.stdout.close()
        tar.wait(timeout=60)
        if imported.returncode != 0:
            raise ContainersUnavailable(f"docker import failed: {_tail(imported.stderr)}")
    except subprocess.CalledProcessError as exc:
        raise ContainersUnavailable(
            f"debootstrap {codename} from {mirror} failed:\n{_tail(exc.stderr or exc.stdout)}"
        ) from exc
    finally:
        shutil.rmtree(root, ignore_errors=True)
    engine.timings["debian base"] = time.monotonic() - began
    return name


def _stand_in_kind(name: str) -> str:
    repository = name.split(":", 1)[0].rsplit("/", 1)[-1]
    if repository not in {"python", "postgres"}:
        raise ValueError(f"no stand-in for {name}: only python and postgres images have one")
    return repository


def build_stand_in(engine: Engine, name: str) -> None:
    """Build the stand-in for ``name`` (python:* or postgres:*) from Debian packages."""
    kind = _stand_in_kind(name)
    base = debian_base_image(engine)
    began = time.monotonic()
    stand_ins = files("db_tools") / "stand_ins"
    with tempfile.TemporaryDirectory(prefix="stand_in_") as context:
        for entry in stand_ins.iterdir():
            if entry.name.startswith(kind):
                target = Path(context) / entry.name
                target.write_bytes(entry.read_bytes())
                target.chmod(0o755)
        args = ["build", "-q", "-f", f"{context}/{kind}.Dockerfile", "-t", name]
        args += ["--build-arg", f"BASE={base}"]
        version = name.split(":", 1)[1].split("-", 1)[0] if ":" in name else ""
        if kind == "python" and re.fullmatch(r"\d+\.\d+", version):
            args += ["--build-arg", f"PYTHON_VERSION={version}"]
        try:
            engine.run(*args, context, timeout=BUILD_TIMEOUT)
        except subprocess.CalledProcessError as exc:
            raise ContainersUnavailable(
                f"the stand-in for {name} did not build:\n{_tail(exc.stderr or exc.stdout)}"
            ) from exc
    engine.timings[f"stand-in {name}"] = time.monotonic() - began


def ensure_image(engine: Engine, name: str) -> str:
    """``name`` on the engine: present, pulled, or built as a stand-in. Says which."""
    if engine.image_exists(name):
        labels = engine.run("image", "inspect", "--format", "{{json .Config.Labels}}", name)
        stand_in = STAND_IN_LABEL in (json.loads(labels.stdout or "null") or {})
        return "stand-in (kept)" if stand_in else "present"
    pulled = engine.run("pull", "-q", name, check=False, timeout=PULL_TIMEOUT)
    if pulled.returncode == 0:
        return "pulled"
    build_stand_in(engine, name)
    return f"stand-in built (pull failed: {_tail(pulled.stderr, 1)})"


# Builds --------------------------------------------------------------------------------


def host_ca_bundle() -> Path | None:
    """The CA bundle the host trusts (``SSL_CERT_FILE``, else Debian's), if there is one."""
    for candidate in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@dataclass(frozen=True)
class Image:
    """One of the repository's images: its Dockerfile (context: the workspace root)."""

    tag: str
    dockerfile: str
    base_images: tuple[str, ...] = (PYTHON_IMAGE,)


IMAGES = (
    Image("data-layer/migrate:latest", "run_migrations/Dockerfile"),
    Image("data-layer/my-api:latest", "apps/my_api/Dockerfile"),
    Image("data-layer/bibikos-api:latest", "apps/bibikos_api/Dockerfile"),
)


def build_image(
    engine: Engine,
    dockerfile: str,
    tag: str,
    *,
    target: str | None = None,
    context: Path | None = None,
    ca_bundle: Path | None = None,
) -> float:
    """Build ``dockerfile`` (relative to the workspace root, the context) with BuildKit,
    the CA bundle as the ``ca_bundle`` secret; returns the seconds it took."""
    root = context or workspace_root()
    bundle = ca_bundle if ca_bundle is not None else host_ca_bundle()
    args = ["build", "-f", str(root / dockerfile), "-t", tag]
    if bundle is not None:
        args += ["--secret", f"id={CA_SECRET},src={bundle}"]
    if target:
        args += ["--target", target]
    began = time.monotonic()
    try:
        engine.run(*args, str(root), timeout=BUILD_TIMEOUT)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"docker build {dockerfile} failed:\n{_tail(exc.stderr, 40)}") from exc
    return time.monotonic() - began


def build_images(engine: Engine, images: Iterable[Image] = IMAGES) -> Iterator[tuple[Image, float]]:
    """Each image built (its base images ensured first), with the seconds its build took."""
    for image in images:
        for base in image.base_images:
            ensure_image(engine, base)
        yield image, build_image(engine, image.dockerfile, image.tag)


def main(argv: Sequence[str] | None = None) -> int:
    """Build the repository's images (stand-ins first where nothing can be pulled)."""
    del argv
    try:
        # The images are for `docker compose up` next: a dockerd started here keeps running.
        engine = ensure_engine(outlive=True)
        if engine.started is not None:
            print(f"started dockerd (pid {engine.started.pid}, log {engine.log})", flush=True)
        for name in (PYTHON_IMAGE, POSTGRES_IMAGE):
            print(f"{name}: {ensure_image(engine, name)}", flush=True)
        for image, seconds in build_images(engine):
            size = engine.image_size(image.tag) / 1e6
            print(f"{image.tag}: built in {seconds:.0f} s, {size:.0f} MB", flush=True)
    except (ContainersUnavailable, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for step, seconds in engine.timings.items():
        print(f"{step}: {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
