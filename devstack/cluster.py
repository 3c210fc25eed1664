"""`batch-export cluster` (`make cluster`): the service across several hosts, as Linux network namespaces on this machine.

Each host is a network namespace with one veth into a private bridge, and an address of its own in
10.77.0.0/24; the bridge itself (10.77.0.1) is this machine, from where the operator (and the tests)
reach every host. Nothing else is routed: a host has no default route and its loopback stays down, so
every process reaches the others over the bridge, by address, or not at all.

    bxc-data     10.77.0.10   Postgres :5432, Redis :6379, S3 (moto's server) :9000
    bxc-api1     10.77.0.21   batch-export serve --host 10.77.0.21
    bxc-api2     10.77.0.22   batch-export serve --host 10.77.0.22
    bxc-worker1  10.77.0.31   batch-export worker
    bxc-worker2  10.77.0.32   batch-export worker

`Cluster` builds and removes all of it (every name starts with `bxc`, so a crashed run's leftovers are
found by name) and breaks the links between hosts for the fault tests. `run_cluster` is the demo: one
export created through API host 1, run by a worker host, downloaded through API host 2.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from devstack import demo
from devstack.demo import wait_for_export
from devstack.servers import LocalPostgres, LocalRedis, LocalServiceError, in_netns, port_open

PREFIX = "bxc"
BRIDGE = f"{PREFIX}-br0"
NETWORK = "10.77.0"
OPERATOR_ADDRESS = f"{NETWORK}.1"  # the bridge: this machine's seat on the private network
FOLDER_PREFIX = f"{PREFIX}-cluster-"
POSTGRES_PORT = 5432
REDIS_PORT = 6379
S3_PORT = 9000
API_PORT = 8000
WORKER_METRICS_PORT = 9101  # each worker host serves its /metrics on its own address
BUCKET = "exports"
S3_PREFIX = "cluster"
SECRET_KEY = "cluster-demo-secret-key-0123456789"
# One cluster per machine (its names and addresses are fixed): a run holds this lock from before it
# removes leftovers until its teardown is over; the kernel releases it when a run crashes.
LOCK_FILE = Path("/run/lock/bxc-cluster.lock")
LOCK_WAIT = 900.0
# The routing table block() sends a host's blocked traffic to: one blackhole route per blocked peer.
BLOCKED_TABLE = 77
# Loops over the network are bounded: a host that does not come up within this is an error, not a hang.
START_TIMEOUT = 90.0


@dataclass(frozen=True)
class Host:
    """One machine of the cluster: a network namespace, its address, and the two ends of its cable."""

    name: str  # the namespace, e.g. bxc-worker1
    address: str
    role: str

    @property
    def cable(self) -> str:
        """The bridge's end of the host's veth pair (interface names are at most 15 characters)."""
        return f"{PREFIX}-{self.name.removeprefix(PREFIX + '-')[:10]}"

    @property
    def nic(self) -> str:
        """The host's own end, inside its namespace."""
        return "eth0"


DATA = Host(f"{PREFIX}-data", f"{NETWORK}.10", "Postgres, Redis, S3")
API_HOSTS = (Host(f"{PREFIX}-api1", f"{NETWORK}.21", "API"), Host(f"{PREFIX}-api2", f"{NETWORK}.22", "API"))
WORKER_HOSTS = (
    Host(f"{PREFIX}-worker1", f"{NETWORK}.31", "worker"),
    Host(f"{PREFIX}-worker2", f"{NETWORK}.32", "worker"),
)
HOSTS = (DATA, *API_HOSTS, *WORKER_HOSTS)


class ClusterError(RuntimeError):
    """The cluster could not be built or did not come up; the message says what to do."""


def _run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise ClusterError(f"`{' '.join(argv)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def check_can_build() -> None:
    """Namespaces, veths and bridges need root (CAP_NET_ADMIN) and the `ip` tool: say so, in one line."""
    if os.geteuid() != 0:
        raise ClusterError("the cluster needs root: network namespaces, veth pairs and a bridge need CAP_NET_ADMIN")
    for tool in ("ip", "ss", "runuser"):
        if shutil.which(tool) is None:
            raise ClusterError(f"the cluster needs `{tool}` (apt-get install iproute2 util-linux)")


def _our_namespaces() -> list[str]:
    listing = _run(["ip", "netns", "list"], check=False).stdout.split()
    return [name for name in listing if name.startswith(PREFIX + "-")]


def _pids_in(netns: str) -> list[int]:
    return [int(pid) for pid in _run(["ip", "netns", "pids", netns], check=False).stdout.split()]


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _empty_namespace(netns: str, timeout: float = 15) -> None:
    """Ends every process living in `netns` (all of them ours: we made the namespace), SIGTERM then SIGKILL."""
    _signal_all(_pids_in(netns), signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pids_in(netns) and time.monotonic() < deadline:
        time.sleep(0.2)
    _signal_all(_pids_in(netns), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _pids_in(netns) and time.monotonic() < deadline:
        time.sleep(0.1)


def remove_leftovers() -> list[str]:
    """Removes what a crashed run left behind, found by our prefix: its processes, namespaces, links and folders."""
    removed = []
    for netns in _our_namespaces():
        _empty_namespace(netns)
        _run(["ip", "netns", "delete", netns], check=False)
        removed.append(f"namespace {netns}")
    links = _run(["ip", "-o", "link", "show"], check=False).stdout.splitlines()
    for line in links:
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(PREFIX + "-"):
            _run(["ip", "link", "delete", name], check=False)
            removed.append(f"link {name}")
    for folder in Path(tempfile.gettempdir()).glob(FOLDER_PREFIX + "*"):
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(f"folder {folder}")
    return removed


@dataclass
class HostProcess:
    """A process started inside a host's namespace, its output in `<folder>/<name>.log`.

    It has the `name` and `log()` that tests.support.processes reads the attempts from."""

    name: str
    host: Host
    argv: list[str]
    env: dict[str, str]
    folder: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.folder / f"{self.name}.log"

    def start(self) -> HostProcess:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                in_netns(self.host.name, self.argv),
                env=self.env,
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to its process group, SIGKILL after `timeout` seconds."""
        if self.process is None:
            return
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)  # the work horse and scheduler, if any outlived it
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)


def _wait(predicate: Callable[[], Any], timeout: float, what: str, *logs: HostProcess) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name} ---\n{p.log()[-2000:]}" for p in logs)
            raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(0.2)
    return value


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@dataclass
class Cluster:
    """The hosts, the servers on the data host, and the service's processes on the others."""

    folder: Path
    worker_env: dict[str, str] = field(default_factory=dict)
    postgres: LocalPostgres | None = None
    redis: LocalRedis | None = None
    processes: dict[str, HostProcess] = field(default_factory=dict)

    # --- addresses and configuration -----------------------------------------------------------------

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@{DATA.address}:{POSTGRES_PORT}/batch_export"

    @property
    def redis_url(self) -> str:
        return f"redis://{DATA.address}:{REDIS_PORT}/0"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{DATA.address}:{S3_PORT}"

    @staticmethod
    def metrics_url(host: Host) -> str:
        """Where the host's process serves GET /metrics: the API's own port, or the worker's metrics port."""
        port = API_PORT if host in API_HOSTS else WORKER_METRICS_PORT
        return f"http://{host.address}:{port}/metrics"

    @staticmethod
    def api_url(host: Host) -> str:
        return f"http://{host.address}:{API_PORT}"

    def env(self, **overrides: str) -> dict[str, str]:
        """What every service process is told: where Postgres, Redis and S3 are, by address."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "EXPORT_STORAGE_URL": f"s3://{BUCKET}/{S3_PREFIX}",
            "S3_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": "cluster",
            "AWS_SECRET_ACCESS_KEY": "cluster",
            "AWS_DEFAULT_REGION": "us-east-1",
            "SECRET_KEY": SECRET_KEY,
            "SMTP_URL": "",
            "OUTBOX_DIR": str(self.folder / "outbox"),
            **overrides,
        }

    # --- building and removing -----------------------------------------------------------------------

    def build_network(self) -> None:
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        _run(["ip", "addr", "add", f"{OPERATOR_ADDRESS}/24", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])
        for host in HOSTS:
            _run(["ip", "netns", "add", host.name])
            _run(["ip", "link", "add", host.cable, "type", "veth", "peer", "name", host.nic, "netns", host.name])
            _run(["ip", "link", "set", host.cable, "master", BRIDGE, "up"])
            inside = ["ip", "netns", "exec", host.name, "ip"]
            _run([*inside, "addr", "add", f"{host.address}/24", "dev", host.nic])
            _run([*inside, "link", "set", host.nic, "up"])

    def start_data_host(self) -> None:
        pg_folder = self.folder / "pg"
        pg_folder.mkdir()
        shutil.chown(pg_folder, "postgres", "postgres")
        self.postgres = LocalPostgres(
            pg_folder / "data", POSTGRES_PORT, fast_unsafe=True, host=DATA.address, netns=DATA.name
        )
        self.postgres.initialize()
        # initdb trusts loopback only; the cluster's clients come from its private network.
        with open(self.postgres.data_dir / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {NETWORK}.0/24 trust\n")
        self.postgres.start()
        self.redis = LocalRedis(self.folder / "redis", REDIS_PORT, host=DATA.address, netns=DATA.name)
        self.redis.start()
        s3 = HostProcess(
            "s3",
            DATA,
            [str(Path(sys.executable).with_name("moto_server")), "-H", DATA.address, "-p", str(S3_PORT)],
            self.env(),
            self.folder / "logs",
        ).start()
        self.processes[s3.name] = s3
        _wait(lambda: port_open(S3_PORT, DATA.address), START_TIMEOUT, "S3 on the data host", s3)
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id="cluster",
            aws_secret_access_key="cluster",
            region_name="us-east-1",
        ).create_bucket(Bucket=BUCKET)

    def cli(self, host: Host, *argv: str, timeout: float = 600) -> str:
        """`batch-export <argv>` run to its end on `host`; returns its stdout."""
        result = subprocess.run(
            in_netns(host.name, [sys.executable, "-m", "cli", *argv]),
            env=self.env(),
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise ClusterError(
                f"`batch-export {' '.join(argv)}` on {host.name} failed: {result.stderr.strip()[-2000:]}"
            )
        return result.stdout

    def start_api(self, host: Host) -> HostProcess:
        name = host.name.removeprefix(PREFIX + "-")
        api = HostProcess(
            name,
            host,
            [sys.executable, "-m", "cli", "serve", "--host", host.address, "--port", str(API_PORT)],
            self.env(PUBLIC_BASE_URL=self.api_url(host)),
            self.folder / "logs",
        ).start()
        self.processes[name] = api

        def healthy() -> bool:
            if not api.alive():
                raise ClusterError(f"{name} exited at start:\n{api.log()[-2000:]}")
            return _http_ok(f"{self.api_url(host)}/readyz")

        _wait(healthy, START_TIMEOUT, f"{name} to answer /readyz", api)
        return api

    def start_worker(self, host: Host, **env: str) -> HostProcess:
        name = host.name.removeprefix(PREFIX + "-")
        previous = self.processes.get(name)
        if previous is not None and previous.alive():
            raise ClusterError(f"{name} is already running")
        worker = HostProcess(
            name,
            host,
            [sys.executable, "-m", "cli", "worker"],
            self.env(**{"WORKER_METRICS_PORT": str(WORKER_METRICS_PORT), **self.worker_env, **env}),
            self.folder / "logs",
        )
        # A restarted worker writes on in the same log: the attempts of both lives are read from it.
        self.processes[name] = worker.start()
        return worker

    def wait_worker_ready(self, worker: HostProcess, lives: int = 1) -> None:
        def listening() -> bool:
            if not worker.alive():
                raise ClusterError(f"{worker.name} exited at start:\n{worker.log()[-2000:]}")
            return worker.log().count("*** Listening on") >= lives

        _wait(listening, START_TIMEOUT, f"{worker.name} to listen", worker)

    def up(self, *, traces: int, say: Callable[[str], None] = lambda _: None) -> dict[str, str]:
        """Builds the network, starts every server and process, migrates and seeds one project.

        Returns the project id and a token of its owner."""
        self.build_network()
        say(f"network {BRIDGE} ({NETWORK}.0/24): " + ", ".join(f"{h.name} {h.address}" for h in HOSTS))
        self.start_data_host()
        say(f"{DATA.name}: Postgres {DATA.address}:{POSTGRES_PORT}, Redis :{REDIS_PORT}, S3 :{S3_PORT}")
        operator = API_HOSTS[0]
        self.cli(operator, "migrate")
        project_id = self.cli(operator, "project", "create", "--name", "Cluster project").strip().splitlines()[-1]
        self.cli(operator, "seed", "--project", project_id, "--traces", str(traces))
        say(f"migrated and seeded {traces} traces in project {project_id} (from {operator.name})")
        token = self.cli(
            operator, "user", "create", "--email", "owner@cluster.example", "--project", project_id, "--role", "OWNER"
        )
        token = token.strip().splitlines()[-1]
        for host in API_HOSTS:
            self.start_api(host)
            say(f"{host.name}: API at {self.api_url(host)}")
        workers = [self.start_worker(host) for host in WORKER_HOSTS]
        for worker in workers:
            self.wait_worker_ready(worker)
            say(f"{worker.host.name}: worker listening")
        return {"project_id": project_id, "token": token}

    def down(self, *, keep_logs: Path | None = None) -> None:
        """Stops every process and server and removes the namespaces, the bridge and the data folder
        (its process logs copied to `keep_logs` first, if given)."""
        for process in reversed(list(self.processes.values())):
            try:
                process.stop(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            try:
                self.postgres.stop(mode="immediate")
            except (OSError, LocalServiceError):
                pass
        for netns in _our_namespaces():
            _empty_namespace(netns)
            _run(["ip", "netns", "delete", netns], check=False)
        _run(["ip", "link", "delete", BRIDGE], check=False)
        if keep_logs is not None and (self.folder / "logs").exists():
            shutil.copytree(self.folder / "logs", keep_logs, dirs_exist_ok=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- faults between hosts ------------------------------------------------------------------------

    def cut(self, host: Host) -> None:
        """Unplugs the host's cable at the bridge: its processes live on, partitioned from every other host."""
        _run(["ip", "link", "set", host.cable, "down"])

    def heal(self, host: Host) -> None:
        _run(["ip", "link", "set", host.cable, "up"])

    def block(self, host: Host, peer: Host, port: int) -> None:
        """Silently drops every TCP segment the host sends to `peer`'s `port`: new connections time out and
        open ones fall silent both ways (no ACK ever answers the peer). Policy routing into a blackhole,
        inside the host's namespace: it needs no netfilter or tc action module, which many kernels lack."""
        inside = ["ip", "netns", "exec", host.name, "ip"]
        _run([*inside, "route", "replace", "blackhole", f"{peer.address}/32", "table", str(BLOCKED_TABLE)])
        rule = ["to", f"{peer.address}/32", "ipproto", "tcp", "dport", str(port), "table", str(BLOCKED_TABLE)]
        _run([*inside, "rule", "add", *rule])

    def unblock(self, host: Host) -> None:
        """Removes every block() of the host."""
        inside = ["ip", "netns", "exec", host.name, "ip"]
        for _ in range(64):  # one rule per blocked port; bounded all the same
            if _run([*inside, "rule", "del", "table", str(BLOCKED_TABLE)], check=False).returncode != 0:
                break
        _run([*inside, "route", "flush", "table", str(BLOCKED_TABLE)], check=False)

    def run_in(self, host: Host, *argv: str) -> str:
        """A command run to its end inside the host's namespace; its stdout."""
        return _run(in_netns(host.name, list(argv))).stdout

    def sockets(self, host: Host) -> str:
        """`ss -Htln` inside the host: what listens there, on which address."""
        return self.run_in(host, "ss", "-Htln")


@contextmanager
def _the_only_cluster(say: Callable[[str], None]) -> Iterator[None]:
    """Waits (bounded) for any other run's cluster on this machine to be removed, and keeps others out meanwhile."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "a+") as lock:
        deadline = time.monotonic() + LOCK_WAIT
        told = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"another cluster is still running on this machine ({LOCK_FILE} is held)"
                    ) from None
                if not told:
                    say(f"waiting for another run's cluster to be removed ({LOCK_FILE})")
                    told = True
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def running_cluster(
    *, traces: int, say: Callable[[str], None] = lambda _: None, keep_logs: Path | None = None, **worker_env: str
) -> Iterator[tuple[Cluster, dict[str, str]]]:
    """A cluster that is always removed afterwards: at the end, on an error, on Ctrl+C or SIGTERM."""
    check_can_build()
    with _the_only_cluster(say):
        for leftover in remove_leftovers():
            say(f"removed the leftover {leftover} of an earlier run")
        yield from _built_cluster(traces=traces, say=say, keep_logs=keep_logs, worker_env=worker_env)


def _built_cluster(
    *, traces: int, say: Callable[[str], None], keep_logs: Path | None, worker_env: dict[str, str]
) -> Iterator[tuple[Cluster, dict[str, str]]]:
    cluster = Cluster(Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX)), worker_env=worker_env)
    os.chmod(cluster.folder, 0o755)  # Postgres's user enters it to reach its data folder
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # through the finally below, like Ctrl+C

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield cluster, cluster.up(traces=traces, say=say)
    finally:
        # A second Ctrl+C or SIGTERM must not break off the teardown half-way (it is bounded in time).
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say("tearing the cluster down")
        try:
            cluster.down(keep_logs=keep_logs)
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)


# --- the demo ---------------------------------------------------------------------------------------


class Api(demo.Api, Protocol):
    """What the demo needs of an API client (cli.api_client.ApiClient): the demo's, and downloads."""

    def download(self, url: str, destination: Path) -> int: ...


def _say(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def run_cluster(*, traces: int, api_client: Callable[[str, str], Api]) -> None:
    """The demo: builds the cluster, runs one export through API host 1 that a worker host runs,
    downloads it through API host 2, prints the result, and removes everything."""
    with running_cluster(traces=traces, say=_say) as (cluster, seeded):
        project_id, token = seeded["project_id"], seeded["token"]
        creator, downloader = (api_client(cluster.api_url(host), token) for host in API_HOSTS)
        export = creator.call(
            "batchExport.create",
            {
                "projectId": project_id,
                "name": "cluster: traces",
                "format": "CSV",
                "query": {"tableName": "traces", "filter": [], "orderBy": {"column": "timestamp", "order": "DESC"}},
            },
        )
        _say(f"created export {export['id']} through {API_HOSTS[0].name}")
        export = wait_for_export(downloader, project_id, export)
        if export["status"] != "COMPLETED":
            raise ClusterError(f"export {export['id']} is {export['status']}: {export['log']}")
        ran_on = [
            p.host.name for p in cluster.processes.values() if f"export {export['id']}: attempt started" in p.log()
        ]
        link = downloader.call("batchExport.downloadUrl", {"projectId": project_id, "batchExportId": export["id"]})
        destination = cluster.folder / "download.csv"
        size = downloader.download(link["url"], destination)
        digest = hashlib.sha256(destination.read_bytes()).hexdigest()
        if digest != export["sha256"]:
            raise ClusterError(f"the download's sha256 {digest} is not the export's {export['sha256']}")
        lines = destination.read_text(encoding="utf-8").splitlines()
        print(
            """
hosts:
"""
            + "".join(f"  {h.name:<12} {h.address:<11} {h.role}\n" for h in HOSTS)
            + f"""
export {export["id"]}: {export["status"]}, {export["progress"]["rowsExported"]:,} rows
  created through  {API_HOSTS[0].name} ({cluster.api_url(API_HOSTS[0])})
  run by           {", ".join(ran_on) or "unknown"}
  downloaded via   {API_HOSTS[1].name} ({cluster.api_url(API_HOSTS[1])}), from S3 at {cluster.s3_endpoint}
  {size:,} bytes, sha256 {digest} (matches the export's)
  first line:      {lines[0][:100] if lines else ""}
""",
            flush=True,
        )
        # A worker counts a job once its work horse has ended, a moment after the export's row says COMPLETED.
        runners = [h for h in WORKER_HOSTS if h.name in ran_on]
        _wait(
            lambda: all(_scrape(Cluster.metrics_url(h)).get(FINISHED_COMPLETED) for h in runners),
            15,
            "the worker's metrics to count the export",
        )
        print("metrics (GET /metrics of each host, the service's non-zero samples):")
        for host in (*API_HOSTS, *WORKER_HOSTS):
            print(f"  {host.name} {Cluster.metrics_url(host)}")
            for sample, value in _scrape(Cluster.metrics_url(host)).items():
                print(f"    {sample} {value:g}")
        print(flush=True)


# The samples make cluster prints: the service's own (not the process's), without histogram buckets.
SHOWN_METRICS = "batch_export_"
FINISHED_COMPLETED = 'batch_export_exports_finished_total{format="CSV",status="COMPLETED",table="traces"}'


def _scrape(url: str) -> dict[str, float]:
    """The non-zero service samples of one /metrics, as {'name{labels}': value}; empty if it cannot be read."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return {}
    shown: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith(SHOWN_METRICS) or sample.name.endswith(("_bucket", "_created")):
                continue
            if sample.value:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                shown[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return shown
