"""A replica in its own network and PID namespaces: bubblewrap makes them, pasta connects them.

What rootless container engines do, with the same tools (Debian's `bubblewrap` and `passt`):
- `bwrap` puts the replica in new user, network and PID namespaces, under bwrap's own init
  (PID 1: it reaps orphans; the replica, PID 2, can signal itself as any process can). When the
  replica exits, the init does, and the kernel kills whatever else runs in the namespace; the
  whole sandbox dies with the server (`--die-with-parent`), even on `kill -9`.
- `pasta` joins the network namespace once the replica says it started (so after bwrap set up
  the namespace's loopback: doing both at once races) and before the replica goes on, and gives
  it outbound network, the server's port on its loopback (nested `.remote()` calls), and,
  for a `web_server`, one host loopback port forwarded to the port it declared. Nothing the
  replica binds, even on 0.0.0.0, is reachable from the host's interfaces any other way, and any
  number of replicas can listen on the same declared port.
The replica's own server needs no forwarding: its listening socket is made on the host's loopback
before the sandbox and inherited (a socket keeps the namespace it was made in).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ember.process import die_with_parent

NETWORK_TIMEOUT = 10.0  # seconds for pasta to set up a replica's network


class SandboxError(Exception):
    """The sandbox could not be made; the message says which step failed."""


@dataclass(frozen=True)
class Sandbox:
    bwrap: str
    pasta: str

    @classmethod
    def detect(cls) -> tuple[Sandbox | None, str | None]:
        """A working sandbox, or None and why not (tried once, at server start)."""
        bwrap, pasta = shutil.which("bwrap"), shutil.which("pasta")
        if bwrap is None or pasta is None:
            missing = " and ".join(n for n, p in (("bubblewrap", bwrap), ("passt", pasta)) if not p)
            return None, f"{missing} not installed (Debian: apt install bubblewrap passt)"
        sandbox = cls(bwrap, pasta)
        try:  # in a thread of its own: the caller may be inside an event loop
            with ThreadPoolExecutor(1) as thread:
                thread.submit(asyncio.run, sandbox.probe()).result()
        except (SandboxError, OSError) as exc:
            return None, f"namespaces cannot be made here: {exc}"
        return sandbox, None

    def wrap(self, argv: Sequence[str], info_fd: int) -> list[str]:
        """`argv` run in a sandbox; bwrap writes the host PID of the sandbox's init on `info_fd`."""
        uid, gid = str(os.getuid()), str(os.getgid())
        return [
            self.bwrap,
            "--unshare-user", "--uid", uid, "--gid", gid,
            "--unshare-net", "--unshare-pid", "--die-with-parent",
            "--dev-bind", "/", "/",
            # Its own /proc: process ids there are the sandbox's (vLLM reads /proc/<own pid>).
            "--proc", "/proc",
            "--info-fd", str(info_fd),
            "--", *argv,
        ]  # fmt: skip

    async def connect(
        self,
        child_pid: int,
        forwards: dict[int, int],
        outbound_ports: Sequence[int],
        address: str = "127.0.0.1",
    ) -> asyncio.subprocess.Process:
        """Start pasta for the sandbox of `child_pid`; returns once its network is up.

        `forwards` maps host ports on `address` (the loopback, or a Ray node's address) to ports
        inside; `outbound_ports` are host loopback ports the replica reaches at the same numbers
        on its own loopback. The caller reads pasta's stderr and stops pasta when the replica is
        gone (it does not notice by itself).
        """
        inbound = ",".join(f"{address}/{host}:{inside}" for host, inside in forwards.items())
        outbound = ",".join(str(port) for port in outbound_ports)
        with tempfile.TemporaryDirectory(prefix="ember-pasta-") as scratch:
            ready = Path(scratch) / "ready"
            os.mkfifo(ready, 0o600)  # pasta writes its pid here once the namespace is set up
            reader = os.open(ready, os.O_RDONLY | os.O_NONBLOCK)
            try:
                pasta = await asyncio.create_subprocess_exec(
                    *self._pasta_argv(child_pid, ready, inbound or "none", outbound or "none"),
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE, preexec_fn=_pasta_dies_with_us,
                )  # fmt: skip
                await _ready_or_dead(pasta, reader)
            finally:
                os.close(reader)
        return pasta

    def _pasta_argv(self, child_pid: int, ready: Path, inbound: str, outbound: str) -> list[str]:
        argv = [self.pasta, "--foreground", "--quiet", "--config-net", "--pid", str(ready)]
        if os.geteuid() == 0:
            argv += ["--runas", f"{os.getuid()}:{os.getgid()}"]  # pasta would become nobody
        argv += ["-t", inbound, "-u", "none", "-T", outbound, "-U", "none", str(child_pid)]
        return argv

    async def probe(self) -> None:
        """Make a sandbox with a process waiting in it and connect it, as a replica start does."""
        info_r, info_w = os.pipe()
        go_r, go_w = os.pipe()
        # Says it started (bwrap's own setup is done), then waits to be let go.
        script = "echo started; read -r go"
        process = await asyncio.create_subprocess_exec(
            *self.wrap(["sh", "-c", script], info_w), pass_fds=(info_w,),
            stdin=go_r, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        os.close(info_w)
        os.close(go_r)
        try:
            child_pid = await read_child_pid(info_r)
            assert process.stdout is not None
            await asyncio.wait_for(process.stdout.readline(), NETWORK_TIMEOUT)
            pasta = await self.connect(child_pid, {}, [])
            pasta.kill()
            await pasta.wait()
        finally:
            os.close(info_r)
            with contextlib.suppress(BrokenPipeError):
                os.write(go_w, b"go\n")
            os.close(go_w)
            code = await process.wait()
            stderr = await process.stderr.read() if process.stderr else b""
        if code != 0:
            raise SandboxError(f"bwrap exited with {code}: {stderr.decode(errors='replace')}")


async def read_child_pid(info_fd: int) -> int:
    """The host PID of the sandbox's first process (its init), from bwrap's `--info-fd` JSON."""
    data = b""
    deadline = time.monotonic() + NETWORK_TIMEOUT
    while not data.rstrip().endswith(b"}"):
        chunk = await asyncio.wait_for(asyncio.to_thread(os.read, info_fd, 4096), NETWORK_TIMEOUT)
        if not chunk or time.monotonic() > deadline:
            raise SandboxError("bwrap exited before it made the sandbox (see the replica's log)")
        data += chunk
    return int(json.loads(data)["child-pid"])


async def _ready_or_dead(pasta: asyncio.subprocess.Process, reader: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(reader, readable)
    exited = asyncio.ensure_future(pasta.wait())
    either: list[asyncio.Future[Any]] = [ready, exited]
    try:
        await asyncio.wait(either, timeout=NETWORK_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_reader(reader)
        exited.cancel()
    if ready.done():
        return
    with contextlib.suppress(ProcessLookupError):
        pasta.kill()
    stderr = await pasta.stderr.read() if pasta.stderr else b""
    lines = [ln for ln in stderr.decode(errors="replace").splitlines() if "syslog" not in ln]
    reason = "; ".join(lines[-3:]) or f"no network within {NETWORK_TIMEOUT:g} s"
    raise SandboxError(f"pasta could not connect the sandbox: {reason}")


def _pasta_dies_with_us() -> None:
    die_with_parent(signal.SIGKILL)
