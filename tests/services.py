"""Real PostgreSQL and Redis for the test run.

``ensure_services()`` is a context manager that yields the environment the
integration and e2e lanes need::

    E2I_TEST_POSTGRES_URL  admin URL to a maintenance DB (the user may CREATE DATABASE)
    E2I_TEST_REDIS_URL     URL of a Redis database the tests may use

Each service is resolved on its own, in this order:

1. the URL already in the environment (it must answer, else we raise: an
   explicit setting is never silently replaced by another server);
2. the machine's server on 127.0.0.1 (PostgreSQL 5432 as ``postgres`` with
   trust auth, Redis 6379) -- skipped when ``E2I_TEST_FORCE_PRIVATE=1``;
3. a private, throwaway server on a free port in a temporary directory,
   installing the Debian package first when the binaries are missing and we
   are root with apt-get.

Private servers are stopped and their directories deleted when the context
exits; the machine's servers are never stopped or flushed. If a service can be
neither reached nor started, ``ServicesUnavailable`` says what is missing.

``ensure_chromium()`` installs Debian's ``chromium`` and ``chromium-driver`` when
/usr/bin/chromium or /usr/bin/chromedriver is missing (the release report's browser
test, integration lane), or says which packages to install.

Manual use: ``python tests/services.py --check``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import redis

POSTGRES_ENV = "E2I_TEST_POSTGRES_URL"
REDIS_ENV = "E2I_TEST_REDIS_URL"
FORCE_PRIVATE_ENV = "E2I_TEST_FORCE_PRIVATE"

MACHINE_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
MACHINE_REDIS_URL = "redis://127.0.0.1:6379/0"

START_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 3
# PostgreSQL refuses to run as root; this user is created when `postgres` does not exist.
FALLBACK_PG_USER = "e2i_pg"


class ServicesUnavailable(RuntimeError):
    """A required service could neither be reached nor started."""


# --------------------------------------------------------------------------- probes


def postgres_problem(url: str) -> str | None:
    """Return why ``url`` is unusable for the tests, or None if it answers and may CREATE DATABASE."""
    try:
        conn = psycopg2.connect(url, connect_timeout=PROBE_TIMEOUT_S)
    except psycopg2.Error as exc:
        return _first_line(str(exc)) or type(exc).__name__
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            if cur.fetchone() != (1,):
                return "SELECT 1 returned an unexpected result"
            # The tests create scratch databases, so a read-only login is not enough.
            cur.execute("SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user")
            row = cur.fetchone()
            if not (row and row[0]):
                return "the login role may not CREATE DATABASE"
    except psycopg2.Error as exc:
        return _first_line(str(exc)) or type(exc).__name__
    finally:
        conn.close()
    return None


def redis_problem(url: str) -> str | None:
    """Return why ``url`` is unusable for the tests, or None if Redis answers PING."""
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S
        )
    except ValueError as exc:  # malformed URL
        return str(exc)
    try:
        return None if client.ping() else "PING did not return PONG"
    except redis.RedisError as exc:
        return _first_line(str(exc)) or type(exc).__name__
    finally:
        client.close()


def mask_url(url: str) -> str:
    """Hide any password in a URL or libpq key=value DSN, for printing."""
    url = re.sub(r"(password\s*=\s*)[^\s&]+", r"\1***", url, flags=re.IGNORECASE)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _report(service: str, message: str) -> None:
    # stderr: callers (lanes.py, conftest) may parse stdout.
    print(f"[services] {service}: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A port that was free a moment ago (the OS picks it when binding to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until(check: Callable[[], str | None], alive: Callable[[], bool]) -> str | None:
    """Poll ``check`` until it reports no problem, the server dies, or the timeout passes."""
    deadline = time.monotonic() + START_TIMEOUT_S
    problem = check()
    while problem is not None and alive() and time.monotonic() < deadline:
        time.sleep(0.2)
        problem = check()
    return problem


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


class _Apt:
    """Installs Debian packages when that is possible; `apt-get update` runs at most once."""

    def __init__(self) -> None:
        self._updated = False

    @staticmethod
    def usable() -> bool:
        return os.geteuid() == 0 and shutil.which("apt-get") is not None

    def install(self, package: str) -> str | None:
        """Install ``package``; return None on success, else the failure output tail."""
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        commands = [["apt-get", "install", "-y", "--no-install-recommends", package]]
        if not self._updated:
            commands.insert(0, ["apt-get", "update"])
        _report(package, "binaries missing; installing with apt-get (this can take a minute)")
        for cmd in commands:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
                return f"`{shlex.join(cmd)}` exited {proc.returncode}:\n{tail}"
            if cmd[1] == "update":
                self._updated = True
        return None


# --------------------------------------------------------------------------- Redis


def find_redis_server() -> Path | None:
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    usr_bin = Path("/usr/bin/redis-server")
    return usr_bin if os.access(usr_bin, os.X_OK) else None


def start_private_redis(stack: contextlib.ExitStack, binary: Path) -> str:
    """Start redis-server on a free port; return its URL. Its cleanup goes on ``stack``."""
    workdir = Path(tempfile.mkdtemp(prefix="e2i-redis-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    port = free_port()
    log_path = workdir / "redis.log"
    command = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    # No persistence (the data is throwaway) and no daemon (the process stays ours to stop).
    command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            # Own session, like pg_ctl gives PostgreSQL: a Ctrl-C meant for the tests must
            # not kill the server under their teardown; the context exit stops it.
            start_new_session=True,
        )
    stack.callback(_stop_child, proc)

    url = f"redis://127.0.0.1:{port}/0"
    problem = _wait_until(lambda: redis_problem(url), lambda: proc.poll() is None)
    if problem is not None:
        raise ServicesUnavailable(
            f"private redis-server on port {port} did not answer ({problem}); "
            f"log tail:\n{_log_tail(log_path)}"
        )
    _report("Redis", f"private server on port {port} ({binary}, data in {workdir})")
    return url


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- PostgreSQL


def find_postgres_bindir() -> Path | None:
    """Newest Debian-style /usr/lib/postgresql/<major>/bin holding initdb, pg_ctl and postgres."""
    wanted = ("initdb", "pg_ctl", "postgres")
    candidates = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")]
    on_path = shutil.which("initdb")  # e.g. a source build or another distribution
    if on_path:
        candidates.append(Path(on_path).parent)

    def version(bindir: Path) -> tuple[int, ...]:
        digits = re.findall(r"\d+", bindir.parent.name)
        return tuple(int(d) for d in digits) or (0,)

    for bindir in sorted(candidates, key=version, reverse=True):
        if all(os.access(bindir / name, os.X_OK) for name in wanted):
            return bindir
    return None


def _pg_user() -> str | None:
    """The unprivileged user to run PostgreSQL as, or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_PG_USER):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    useradd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    subprocess.run([*useradd, FALLBACK_PG_USER], check=True, capture_output=True)
    return FALLBACK_PG_USER


def _as_user(user: str | None, cmd: list[str]) -> list[str]:
    if user is None:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *cmd]
    # `su` needs a shell; the user may have nologin as its login shell.
    return ["su", "-s", "/bin/sh", user, "-c", shlex.join(cmd)]


def start_private_postgres(stack: contextlib.ExitStack, bindir: Path) -> str:
    """initdb + pg_ctl start on a free port in a temp dir; return the admin URL."""
    user = _pg_user()
    # Under root, TMPDIR may sit below a directory the postgres user cannot enter.
    workdir = Path(tempfile.mkdtemp(prefix="e2i-pg-", dir="/tmp" if user else None))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    datadir, sockdir, log_path = workdir / "data", workdir / "sock", workdir / "postgres.log"
    sockdir.mkdir()
    if user:
        entry = pwd.getpwnam(user)
        for path in (workdir, sockdir):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        # cwd=workdir: initdb fails when the user cannot read the current directory.
        return subprocess.run(
            _as_user(user, cmd), cwd=workdir, capture_output=True, text=True, check=False
        )

    initdb_cmd = [str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust"]
    # --no-locale: the caller's LANG may name a locale this machine lacks.
    initdb = run([*initdb_cmd, "-E", "UTF8", "--no-locale", "--no-sync"])
    if initdb.returncode != 0:
        raise ServicesUnavailable(f"initdb failed:\n{(initdb.stdout + initdb.stderr).strip()}")

    port = free_port()
    # fsync off: a throwaway cluster need not survive a crash, and tests run faster.
    options = (
        f"-p {port} -k {shlex.quote(str(sockdir))} -c listen_addresses=127.0.0.1"
        " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(datadir)]
    # Register the stop before starting: a half-started server must not outlive us.
    stack.callback(_stop_postgres, run, pg_ctl, datadir)
    timeout = str(int(START_TIMEOUT_S))
    start = run([*pg_ctl, "-l", str(log_path), "-o", options, "-w", "-t", timeout, "start"])
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    if start.returncode != 0:
        problem: str | None = (start.stdout + start.stderr).strip() or "pg_ctl start failed"
    else:
        # pg_ctl -w already waited for readiness; this also proves TCP and trust auth work.
        problem = _wait_until(lambda: postgres_problem(url), lambda: True)
    if problem is not None:
        raise ServicesUnavailable(
            f"private PostgreSQL on port {port} did not answer ({problem}); "
            f"log tail:\n{_log_tail(log_path)}"
        )
    _report("PostgreSQL", f"private server on port {port} ({bindir}, data in {workdir})")
    return url


def _stop_postgres(
    run: Callable[[list[str]], subprocess.CompletedProcess[str]], pg_ctl: list[str], datadir: Path
) -> None:
    for mode in ("fast", "immediate"):  # immediate only if a fast shutdown failed
        if not (datadir / "postmaster.pid").exists():
            return
        run([*pg_ctl, "-m", mode, "-w", "stop"])


# --------------------------------------------------------------------------- resolution


@dataclass(frozen=True)
class _Service:
    name: str
    env_name: str
    machine_url: str
    package: str  # the Debian package that provides the server
    problem: Callable[[str], str | None]
    find_binary: Callable[[], Path | None]
    start: Callable[[contextlib.ExitStack, Path], str]


SERVICES = (
    _Service(
        name="PostgreSQL",
        env_name=POSTGRES_ENV,
        machine_url=MACHINE_POSTGRES_URL,
        package="postgresql",
        problem=postgres_problem,
        find_binary=find_postgres_bindir,
        start=start_private_postgres,
    ),
    _Service(
        name="Redis",
        env_name=REDIS_ENV,
        machine_url=MACHINE_REDIS_URL,
        package="redis-server",
        problem=redis_problem,
        find_binary=find_redis_server,
        start=start_private_redis,
    ),
)


def _resolve(stack: contextlib.ExitStack, service: _Service, apt: _Apt) -> str:
    """Pick the URL for one service: environment, machine's server, or a private one."""
    explicit = os.environ.get(service.env_name)
    if explicit:
        why = service.problem(explicit)
        if why is not None:
            raise ServicesUnavailable(
                f"{service.env_name}={mask_url(explicit)} is set but {service.name} "
                f"there is unusable: {why}"
            )
        _report(service.name, f"from {service.env_name} ({mask_url(explicit)})")
        return explicit

    machine = mask_url(service.machine_url)
    if os.environ.get(FORCE_PRIVATE_ENV, "") not in ("", "0"):
        machine_why: str | None = f"not tried: {FORCE_PRIVATE_ENV} is set"
    else:
        machine_why = service.problem(service.machine_url)
        if machine_why is None:
            _report(service.name, f"machine's server at {machine}")
            return service.machine_url

    binary = service.find_binary()
    if binary is None and apt.usable():
        failure = apt.install(service.package)
        binary = service.find_binary()
        if binary is None:
            raise ServicesUnavailable(
                f"{service.name} is not reachable at {machine} ({machine_why}) and installing "
                f"`{service.package}` did not provide it: {failure or 'binaries still missing'}"
            )
    if binary is None:
        raise ServicesUnavailable(
            f"{service.name} is not reachable at {machine} ({machine_why}) and no "
            f"{service.name} binaries were found; install Debian's `{service.package}` package "
            f"(apt-get install {service.package}) or set {service.env_name}"
        )
    return service.start(stack, binary)


@contextlib.contextmanager
def ensure_services() -> Iterator[dict[str, str]]:
    """Yield ``{E2I_TEST_POSTGRES_URL: ..., E2I_TEST_REDIS_URL: ...}``; stop private servers on exit."""
    apt = _Apt()
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        problems: list[str] = []
        # Resolve every service before failing, so one message names everything missing.
        for service in SERVICES:
            try:
                env[service.env_name] = _resolve(stack, service, apt)
            except ServicesUnavailable as exc:
                problems.append(str(exc))
        if problems:
            raise ServicesUnavailable("\n".join(problems))
        yield env


# --------------------------------------------------------------------------- Chromium

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_PACKAGES = ("chromium", "chromium-driver")


def ensure_chromium() -> None:
    """Debian's Chromium and its chromedriver, for the release report's browser test
    (integration lane): installed with apt-get when either is missing and we are root
    (`apt-get update` first only when the install fails, e.g. no package lists);
    otherwise ``ServicesUnavailable`` naming the packages to install."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not missing:
        return
    packages = " ".join(CHROMIUM_PACKAGES)
    if not _Apt.usable():
        raise ServicesUnavailable(
            f"{', '.join(missing)} missing and this is not root with apt-get: install "
            f"Debian's packages first (apt-get install -y --no-install-recommends {packages})"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *CHROMIUM_PACKAGES]
    _report("chromium", f"{', '.join(missing)} missing; installing {packages} with apt-get")
    failure = ""
    for commands in ([install], [["apt-get", "update"], install]):
        for cmd in commands:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
                failure = f"`{shlex.join(cmd)}` exited {proc.returncode}:\n{tail}"
                break
        else:
            failure = ""
            break
    still = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if still:
        raise ServicesUnavailable(
            f"{', '.join(still)} still missing after installing Debian's {packages}: "
            f"{failure or 'the packages did not provide them'}"
        )


def main(argv: list[str]) -> int:
    if argv != ["--check"]:
        print("usage: python tests/services.py --check", file=sys.stderr)
        return 2
    try:
        with ensure_services() as env:
            for name, url in env.items():
                print(f"{name}={mask_url(url)}")
    except ServicesUnavailable as exc:
        print(f"services unavailable:\n{exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
