"""The local backend: each replica is a `python -m ember.runtime.replica` process on this host.

Replicas run in a sandbox (sandbox.py: own network, PID and IPC namespaces, a view of the files)
where the host allows it, else as plain processes in their own session, each one unit with what it
starts (process.py: its tree, as it is a subreaper, and what carries its EMBER_REPLICA_ID, are
killed with it). Each gets a listening socket on the host's loopback (or, on a Ray node, the
node's address: backends/ray_node.py hosts this backend on each node), made here and inherited, a
status pipe on which it reports ready or failed, and an environment built from nothing but
BASE_ENV, the image's env, its secrets and its assignment: nothing else of the server's
environment (EMBER_SECRET_KEY, say) reaches user code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember import wire
from ember.backends import cuda_checkpoint
from ember.backends.base import (
    Capabilities,
    CheckpointError,
    Gpu,
    LogCallback,
    ReplicaHandle,
    ReplicaLaunch,
    ReplicaStartFailed,
    Template,
)
from ember.backends.log_pump import pump_logs
from ember.backends.sandbox import Sandbox, SandboxError, read_child_pid
from ember.backends.templates import LocalTemplate
from ember.process import kill, kill_replicas, kill_tree, process_tree
from ember.runtime.mounts import working_dir

# What a replica inherits from the server's environment: how to find programs, its Python
# packages and libraries, locale, temp folder, proxies. Documented in the README.
BASE_ENV = (
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH",
    "LD_LIBRARY_PATH", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
    "no_proxy",
)  # fmt: skip
STATUS_DRAIN = 2.0  # seconds to read a status a replica wrote just before it exited
KILL_TEMPLATE_GRACE = 5.0


def base_environment(environ: Mapping[str, str]) -> dict[str, str]:
    return {name: environ[name] for name in BASE_ENV if name in environ}


@dataclass(eq=False)
class LocalReplica:
    replica_id: str
    exit: asyncio.Future[int]  # its exit code, once it is gone
    port: int
    pid: int  # the replica's own process
    web_port: int | None
    status: asyncio.StreamReader = field(repr=False)
    on_log: LogCallback = field(repr=False)
    log_pump: asyncio.Task[None] = field(repr=False)
    tier: str = "fresh"  # or "fork": from a template
    checkpointed: list[int] = field(default_factory=list)  # its processes parked by the driver
    group: int | None = None  # its process group, killed with it when it has no sandbox
    record: Path | None = None
    scratch: Path | None = None  # its sandbox's volume working copies, removed when it exits
    sandbox: int | None = None  # PID 1 of its sandbox (bwrap's init): killing it kills them all
    network: asyncio.subprocess.Process | None = field(default=None, repr=False)  # pasta
    network_log: asyncio.Task[None] | None = field(default=None, repr=False)
    host: str = "127.0.0.1"

    async def wait_ready(self) -> wire.ReplicaStatus:
        status = await self.next_status()
        if status.state != "ready":
            raise ReplicaStartFailed(status.message or f"replica reported {status.state!r}")
        return status

    async def next_status(self) -> wire.ReplicaStatus:
        """The replica's next status report; ReplicaStartFailed if it exits without one."""
        line = asyncio.ensure_future(self.status.readline())
        either: list[asyncio.Future[Any]] = [line, self.exit]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            # Exited: what it wrote last is still in the pipe, or the pipe is at its end.
            report = await asyncio.wait_for(line, STATUS_DRAIN)
        except TimeoutError:
            report = b""
        finally:
            line.cancel()
        if not report:
            raise ReplicaStartFailed(f"replica exited with code {await self.wait()} during startup")
        return wire.ReplicaStatus.model_validate_json(report)

    async def sync_logs(self) -> None:
        """Nothing to fetch: the pump reads the replica's pipe on this host as lines come."""

    async def wait(self) -> int:
        code = await asyncio.shield(self.exit)
        if self.sandbox is None:  # a sandbox's processes die with it
            await asyncio.to_thread(self._kill_leftovers)
        await self.log_pump  # the last lines (a traceback, say) reach the log first
        if self.network is not None and self.network.returncode is None:
            self.network.kill()  # pasta does not notice its namespace is gone
            await self.network.wait()
        if self.record is not None:
            self.record.unlink(missing_ok=True)
        if self.scratch is not None:
            await asyncio.to_thread(shutil.rmtree, self.scratch, True)
        return code

    def _kill_leftovers(self) -> None:
        """What it started and left running, however it ended (a crash too): its group, and
        every process that carries its id, in a session of its own or not."""
        if self.group is not None:
            _signal_group(self.group, signal.SIGKILL)
        kill_replicas([self.replica_id])


class LocalBackend:
    """Replica processes on this host, sandboxed where the host allows it."""

    def __init__(
        self,
        gpus: Sequence[Gpu],
        base_env: Mapping[str, str],
        server_ports: Sequence[int],
        run_dir: Path,
        sandbox: Sandbox | None,
        isolation_missing: str | None,
        host: str = "127.0.0.1",
    ) -> None:
        self._gpus, self._base_env, self._host = tuple(gpus), dict(base_env), host
        self._server_ports, self._run_dir = tuple(server_ports), run_dir
        self._data_dir = run_dir.parent  # the run dir is $EMBER_HOME/run; replicas don't see it
        self._sandbox, self._isolation_missing = sandbox, isolation_missing
        self._replicas: set[LocalReplica] = set()
        self._templates: set[LocalTemplate] = set()
        run_dir.mkdir(parents=True, exist_ok=True)
        if sandbox is not None and sandbox.user is not None:  # shut out even outside its view
            self._data_dir.chmod(0o700)
        stop_leftovers(run_dir)

    def capabilities(self) -> Capabilities:
        no_cgroups = "cgroup v2 limits are not built yet on the local backend"
        return Capabilities(
            gpus=self._gpus,
            cores=len(os.sched_getaffinity(0)),
            isolation_missing=self._isolation_missing,
            tenancy_missing=self._sandbox.shared if self._sandbox else self._isolation_missing,
            memory_limit_missing=no_cgroups,
            cpu_limit_missing=None,  # CPU affinity
            forking_missing=None,
            checkpoint_missing=cuda_checkpoint.available(),
            memory_bytes=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        )

    async def start_replica(self, launch: ReplicaLaunch) -> LocalReplica:
        """Spawn the replica (in its sandbox, networked, if the host allows)."""
        replica = await self._spawn_runtime(launch, "ember.runtime.replica")
        self._replicas.add(replica)
        return replica

    async def start_template(self, launch: ReplicaLaunch) -> LocalTemplate:
        """Spawn a pool's template process, which forks its replicas (runtime/template.py)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = await self._spawn_runtime(launch, "ember.runtime.template", theirs.fileno())
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        template = await LocalTemplate.attach(process, ours)
        self._templates.add(template)
        return template

    async def fork_replica(self, template: Template, launch: ReplicaLaunch) -> LocalReplica:
        """A replica forked from `template`, in the template's sandbox."""
        assert isinstance(template, LocalTemplate)
        listener = _listener(self._host)
        port = listener.getsockname()[1]
        status_r, status_w = os.pipe()
        log_r, log_w = os.pipe()
        status, status_pipe = await _reader(status_r)
        logs, log_pipe = await _reader(log_r)
        assignment = launch.assignment.model_copy(update={"listen_fd": -1, "status_fd": -1})
        env = {**launch.env, **_identity(assignment)}
        try:
            pid = await template.fork(wire.ForkRequest(assignment=assignment, env=env),
                                      [listener.fileno(), status_w, log_w])  # fmt: skip
        except BaseException:
            status_pipe.close()
            log_pipe.close()
            raise
        finally:
            listener.close()
            os.close(status_w)
            os.close(log_w)
        replica = LocalReplica(
            replica_id=assignment.replica_id,
            exit=template.exits[assignment.replica_id],
            port=port,
            pid=pid,
            web_port=None,  # web_server functions are never forked
            status=status,
            on_log=launch.on_log,
            log_pump=asyncio.ensure_future(pump_logs(logs, launch.on_log)),
            tier="fork",
            record=_record(self._run_dir, launch),  # its children carry its id
            host=self._host,
        )
        self._replicas.add(replica)
        return replica

    async def park(self, handle: ReplicaHandle) -> bool:
        assert isinstance(handle, LocalReplica)
        if cuda_checkpoint.available() is not None:
            return False
        holding = [pid for pid in process_tree(handle.pid) if cuda_checkpoint.has_cuda(pid)]
        done: list[int] = []
        try:
            for pid in holding:
                await asyncio.to_thread(cuda_checkpoint.checkpoint, pid)
                done.append(pid)
        except CheckpointError:
            for pid in reversed(done):  # leave it as it was: running, on its GPU
                await asyncio.to_thread(cuda_checkpoint.restore, pid)
            raise
        handle.checkpointed = done
        return True

    async def restore(self, handle: ReplicaHandle) -> None:
        assert isinstance(handle, LocalReplica)
        for pid in handle.checkpointed:
            await asyncio.to_thread(cuda_checkpoint.restore, pid)
        handle.checkpointed = []

    def memory_bytes(self, handle: ReplicaHandle) -> int:
        assert isinstance(handle, LocalReplica)
        return sum(_resident_bytes(pid) for pid in process_tree(handle.pid))

    async def stop_template(self, template: Template) -> None:
        """Stop a template; replicas it forked and still runs stop with it."""
        assert isinstance(template, LocalTemplate)
        await self.stop_replica(template.process, KILL_TEMPLATE_GRACE)
        template.close()
        self._templates.discard(template)

    async def _spawn_runtime(
        self, launch: ReplicaLaunch, module: str, control_fd: int = -1
    ) -> LocalReplica:
        """`python -m MODULE` with the launch's spec and assignment, in a sandbox if we can."""
        listener = _listener(self._host)
        status_r, status_w = os.pipe()
        status, status_pipe = await _reader(status_r)
        go_r, go_w = os.pipe() if self._sandbox else (-1, -1)
        fds = {"listen_fd": listener.fileno(), "status_fd": status_w, "network_fd": go_r,
               "control_fd": control_fd}  # fmt: skip
        assignment = launch.assignment.model_copy(update=fds)
        argv = [launch.python or sys.executable, "-m", module]
        inherit = [fd for fd in fds.values() if fd >= 0]
        try:
            spawn = _Spawn(argv, self._environment(launch, assignment), inherit, launch)
            return await self._start(spawn, listener.getsockname()[1], status, go_w)
        except BaseException:
            status_pipe.close()
            raise
        finally:
            listener.close()  # the child holds its own copies of these
            for fd in (status_w, go_r, go_w):
                if fd >= 0:
                    os.close(fd)

    def _environment(
        self, launch: ReplicaLaunch, assignment: wire.ReplicaAssignment
    ) -> dict[str, str]:
        return {
            **self._base_env,
            **launch.env,
            **_identity(assignment),
            "PYTHONUNBUFFERED": "1",
            wire.SPEC_ENV: launch.spec.model_dump_json(),
            wire.ASSIGNMENT_ENV: assignment.model_dump_json(),
        }

    async def _start(
        self, spawn: _Spawn, port: int, status: asyncio.StreamReader, go: int
    ) -> LocalReplica:
        launch, web = spawn.launch, spawn.launch.spec.function.web
        if self._sandbox is None:
            process = await spawn.run()
            # Not sandboxed: a web_server's port is the host's own.
            return self._replica(
                launch, process, process.pid, port, web.port if web else None, status
            )
        scratch = working_dir(launch.spec, launch.assignment.replica_id)
        view = await asyncio.to_thread(self._sandbox.view, launch, self._data_dir, scratch)
        info_r, info_w = os.pipe()
        try:
            try:
                argv = self._sandbox.wrap(spawn.argv, info_w, view)
                process = await spawn.run(argv, extra_fd=info_w)
            finally:
                os.close(info_w)
            init = await read_child_pid(info_r)
        finally:
            os.close(info_r)
        forwards = {_free_port(self._host): web.port} if web and web.port else {}
        replica = self._replica(launch, process, init, port, next(iter(forwards), None), status)
        replica.sandbox, replica.scratch = init, scratch
        try:
            await self._connect(replica, forwards, go)
        except BaseException:
            kill([init])
            await replica.wait()
            raise
        return replica

    async def _connect(self, replica: LocalReplica, forwards: dict[int, int], go: int) -> None:
        """Once the replica started (bwrap's setup is done), give it its network, let it go."""
        assert self._sandbox is not None
        status = await replica.next_status()
        if status.state != "started":
            raise ReplicaStartFailed(status.message or f"replica reported {status.state!r}")
        assert replica.sandbox is not None
        replica.pid = only_child(replica.sandbox)
        try:
            pasta = await self._sandbox.connect(
                replica.sandbox, forwards, self._server_ports, self._host
            )
        except (SandboxError, OSError) as exc:
            raise ReplicaStartFailed(f"could not network the replica's sandbox: {exc}") from exc
        replica.network, replica.network_log = pasta, _pump_pasta(pasta, replica.on_log)
        os.write(go, b"go")

    def _replica(
        self,
        launch: ReplicaLaunch,
        process: asyncio.subprocess.Process,
        pid: int,
        port: int,
        web_port: int | None,
        status: asyncio.StreamReader,
    ) -> LocalReplica:
        assert process.stdout is not None
        return LocalReplica(
            replica_id=launch.assignment.replica_id,
            exit=asyncio.ensure_future(process.wait()),
            group=None if self._sandbox else process.pid,
            port=port,
            pid=pid,
            web_port=web_port,
            status=status,
            on_log=launch.on_log,
            log_pump=asyncio.ensure_future(pump_logs(process.stdout, launch.on_log)),
            record=_record(self._run_dir, launch),
            host=self._host,
        )

    async def stop_replica(self, handle: ReplicaHandle, grace: float) -> None:
        assert isinstance(handle, LocalReplica)
        if not handle.exit.done():
            # The replica itself, not its group: bwrap would die at once and take it along.
            _signal(handle.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(handle.exit), grace)
            except TimeoutError:
                # Without a sandbox, its tree first: what it adopted as a subreaper is there.
                if handle.sandbox is not None:
                    kill([handle.sandbox])
                else:
                    await asyncio.to_thread(kill_tree, handle.pid)
        await handle.wait()  # and what it left elsewhere (handle.wait)
        self._replicas.discard(handle)

    async def close(self) -> None:
        await asyncio.gather(*(self.stop_replica(r, 10.0) for r in list(self._replicas)))
        await asyncio.gather(*(self.stop_template(t) for t in list(self._templates)))


@dataclass
class _Spawn:
    """How to start one replica's process: its command, environment and inherited fds."""

    argv: list[str]
    env: dict[str, str]
    inherit: list[int]
    launch: ReplicaLaunch

    async def run(
        self, argv: list[str] | None = None, extra_fd: int = -1
    ) -> asyncio.subprocess.Process:
        cpus, launch = self.launch.cpus, self.launch
        return await asyncio.create_subprocess_exec(
            *(argv or self.argv), env=self.env, start_new_session=True,
            pass_fds=[*self.inherit, extra_fd] if extra_fd >= 0 else self.inherit,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=launch.cwd or launch.spec.source_dir or None,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )  # fmt: skip


async def _reader(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    """An asyncio reader over a pipe; it owns the fd (closing the transport closes it)."""
    reader = asyncio.StreamReader()
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader, transport


def _identity(assignment: wire.ReplicaAssignment) -> dict[str, str]:
    """What a replica's environment says of who it is."""
    return {
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in assignment.gpus),
        wire.REPLICA_ID_ENV: assignment.replica_id,
        "EMBER_TOKEN": assignment.token,
    }


def _listener(host: str) -> socket.socket:
    """The replica's own listening socket on `host` (the loopback, or a Ray node's address),
    inherited by the replica."""
    listener = socket.create_server((host, 0), backlog=1024)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return listener


def _resident_bytes(pid: int) -> int:
    try:
        resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def only_child(pid: int) -> int:
    """The one child of `pid` (bwrap's init runs exactly one: the replica)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    if len(children) != 1:
        raise ReplicaStartFailed(f"the sandbox runs {len(children)} processes, not the replica")
    return int(children[0])


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _pump_pasta(pasta: asyncio.subprocess.Process, on_log: LogCallback) -> asyncio.Task[None]:
    """pasta's complaints go to the replica's log (and its stderr pipe never fills)."""

    async def pump() -> None:
        assert pasta.stderr is not None
        while line := await pasta.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            if text and "syslog" not in text:
                on_log(f"[pasta] {text}")

    return asyncio.ensure_future(pump())


def _record(run_dir: Path, launch: ReplicaLaunch) -> Path:
    """Note the replica, so what it left after a server that died hard can be cleaned up: its
    processes, and the folder of its volumes' working copies (and, sandboxed, its home)."""
    replica_id = launch.assignment.replica_id
    scratch = working_dir(launch.spec, replica_id)
    path = run_dir / f"{replica_id}.json"
    record = {"replica": replica_id, "server": os.getpid()}
    if scratch is not None:
        record["scratch"] = str(scratch)
    path.write_text(json.dumps(record))
    return path


def stop_leftovers(run_dir: Path) -> None:
    """Kill what the replicas of a server that died without stopping them left running, and
    remove their scratch folders.

    Every process that carries a recorded replica's EMBER_REPLICA_ID, which its children inherit:
    in the replica's group, or in a session of their own (a daemon), wherever they run."""
    left: dict[str, tuple[Path, str | None]] = {}  # replica id -> its record, its scratch
    for path in run_dir.glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            record = json.loads(path.read_text())
            if not _alive(record["server"]):
                left[record["replica"]] = path, record.get("scratch")
    if left:
        kill_replicas(left)
    for path, scratch in left.values():
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
