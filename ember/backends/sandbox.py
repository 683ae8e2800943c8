"""A replica in its own network, PID and IPC namespaces: bubblewrap makes them, pasta networks it.

What rootless container engines do, with the same tools (Debian's `bubblewrap` and `passt`):
- `bwrap` puts the replica in new user, network, PID and IPC namespaces, under bwrap's own init
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

What a replica sees of the files (`View`): the host as it is, a fresh /proc (its own processes
only), and the server's data directory (and the volumes' folder, where it is elsewhere) replaced by
an empty folder into which only what this replica needs is bound back: its app's source, its image,
its volumes and a scratch folder for its working copies. The database, the key file, tokens, other
apps' sources and volumes are not there. Where the server runs as root, the replica also runs as
the unprivileged `ember-replica` user (created at start if missing: `ReplicaUser`), which the 0700
root-owned data directory shuts out even if the view were escaped: bwrap runs as root without a
user namespace, so that it can bind paths from that directory, and `setpriv` drops to the user
before the replica starts. What the user must read or write is handed to its group (`grant`). A
server that is not root cannot switch users: its replicas run as itself, and it says so
(single-tenant mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pwd
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember import wire
from ember.backends.base import ReplicaLaunch
from ember.process import die_with_parent
from ember.runtime.mounts import check_mount_path, mount_link

NETWORK_TIMEOUT = 10.0  # seconds for pasta to set up a replica's network
REPLICA_USER = "ember-replica"
# Folders of the data directory every replica reads: the default LLM's weights, converted there
# by `ember llm serve` (a public model). Handed to the user at each start: it gains models.
SHARED_READ = ("models",)


class SandboxError(Exception):
    """The sandbox could not be made; the message says which step failed."""


@dataclass(frozen=True)
class ReplicaUser:
    """The unprivileged user replicas run as when the server is root."""

    uid: int
    gid: int

    @classmethod
    def ensure(cls) -> ReplicaUser:
        """The `ember-replica` system user, created if missing; OSError if it cannot be."""
        try:
            entry = pwd.getpwnam(REPLICA_USER)
        except KeyError:
            useradd = subprocess.run(
                ["useradd", "--system", "--user-group", "--no-create-home",
                 "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", REPLICA_USER],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if useradd.returncode != 0:
                raise OSError(f"useradd {REPLICA_USER} failed: {useradd.stderr.strip()}") from None
            entry = pwd.getpwnam(REPLICA_USER)
        return cls(entry.pw_uid, entry.pw_gid)

    def can_search(self, folder: Path) -> bool:
        """Whether this user may pass through `folder` (its mode bits; ACLs are not read)."""
        info = folder.stat()
        if info.st_uid == self.uid:
            return bool(info.st_mode & stat.S_IXUSR)
        if info.st_gid == self.gid:
            return bool(info.st_mode & stat.S_IXGRP)
        return bool(info.st_mode & stat.S_IXOTH)


@dataclass(frozen=True)
class View:
    """What one sandbox sees of the host's files: each `hidden` folder (the data directory, and
    the highest folders the replica's user could not pass on the way to what it needs, such as
    /root) is empty, with `read` bound back read-only and `write` (source, place inside)
    bound back writable."""

    hidden: tuple[Path, ...]
    read: tuple[Path, ...]
    write: tuple[tuple[Path, Path], ...]
    links: tuple[tuple[str, Path], ...] = ()  # volume mount links (target, path) in hidden folders
    home: Path | None = None  # $HOME inside, where it is not the server's

    def arguments(self) -> list[str]:
        args = [arg for folder in self.hidden for arg in ("--tmpfs", str(folder))]
        bound = [(path, path) for path in self.read] + list(self.write)
        # The folders down to each bound path, passable by anyone (bwrap's would not be).
        made = [inside for _, inside in bound] + [path for _, path in self.links]
        folders = {p for inside in made for p in inside.parents if _under(p, self.hidden)}
        for folder in sorted(folders - {p for h in self.hidden for p in (h, *h.parents)}):
            args += ["--perms", "0755", "--dir", str(folder)]
        for source, inside in bound:
            flag = "--bind" if (source, inside) in self.write else "--ro-bind"
            args += [flag, str(source), str(inside)]
        for target, path in self.links:
            args += ["--symlink", target, str(path)]
        return args + (["--setenv", "HOME", str(self.home)] if self.home else [])


@dataclass(frozen=True)
class Sandbox:
    bwrap: str
    pasta: str
    setpriv: str | None = None  # set where replicas run as `user`
    user: ReplicaUser | None = None  # None: replicas run as the server's user
    shared: str | None = "the server does not run as root"  # why single-tenant; None: not
    # Read-only trees (app sources, images: never changed once written) already handed to the
    # replicas' group by this server.
    granted: set[Path] = field(default_factory=set, compare=False, hash=False)

    @classmethod
    def detect(cls) -> tuple[Sandbox | None, str | None]:
        """A working sandbox, or None and why not (tried once, at server start). As root, one
        whose replicas run as `ember-replica`, if that user and `setpriv` can be had."""
        bwrap, pasta = shutil.which("bwrap"), shutil.which("pasta")
        if bwrap is None or pasta is None:
            missing = " and ".join(n for n, p in (("bubblewrap", bwrap), ("passt", pasta)) if not p)
            return None, f"{missing} not installed (Debian: apt install bubblewrap passt)"
        plain = cls(bwrap, pasta)
        if os.geteuid() == 0:
            try:
                return _probed(_as_replica_user(plain)), None
            except (SandboxError, OSError) as exc:
                why = f"replicas cannot run as {REPLICA_USER} ({exc})"
                plain = cls(bwrap, pasta, shared=why)
        try:
            return _probed(plain), None
        except (SandboxError, OSError) as exc:
            return None, f"namespaces cannot be made here: {exc}"

    def view(self, launch: ReplicaLaunch, data_dir: Path, scratch: Path | None) -> View:
        """What `launch` sees of `data_dir`, with what it needs handed to its user (blocking:
        run it in a thread). `scratch` (made here, if the replica needs it) holds its volumes'
        working copies and, for `user`, its home folder."""
        private = _private_roots(launch.spec, data_dir)
        read, volumes = _needs(launch, data_dir, private)
        write = [(v, v) for v in volumes]
        home = None
        if scratch is not None and (volumes or self.user):
            scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Bound as the whole `.replicas` folder: a template's forked replicas make theirs in it.
            write.append((scratch, scratch.parent))
            if self.user is not None:  # the server's $HOME is not the user's to write in
                (scratch / "home").mkdir(exist_ok=True)
                home = scratch.parent / "home"
        if self.user is None:
            return View(private, tuple(read), tuple(write))
        self._grant([p for p in read if p not in self.granted], write=False)
        self.granted.update(p for p in read if p.parent != data_dir)  # not SHARED_READ
        self._grant([source for source, _ in write], write=True)
        runtime = [p for p in _runtime_paths() if not _under(p, private)]
        mounts = [Path(check_mount_path(p)) for p in launch.spec.function.volumes]
        closed = {c for p in [*private, *runtime, *mounts] if (c := self._highest_closed(p))}
        hidden = _outermost(closed | set(private))
        read = [p for p in runtime if _under(p, hidden)] + read
        # A mount link the server made in a folder the user cannot pass is made again in the view.
        links = tuple((mount_link(str(p)), p) for p in mounts if _under(p, hidden))
        return View(hidden, tuple(read), tuple(write), links, home)

    def _highest_closed(self, path: Path) -> Path | None:
        """The highest folder above `path` that the user cannot pass (/root, say): the view
        hides it, so that what is bound back inside can be reached."""
        assert self.user is not None
        closed = [p for p in reversed(path.parents) if not self.user.can_search(p)]
        return closed[0] if closed else None

    def _grant(self, trees: Iterable[Path], write: bool) -> None:
        assert self.user is not None
        for tree in trees:
            grant(tree, self.user.gid, write)

    def wrap(self, argv: Sequence[str], info_fd: int, view: View | None = None) -> list[str]:
        """`argv` run in a sandbox; bwrap writes the host PID of the sandbox's init on `info_fd`."""
        # Its own /proc: process ids there are the sandbox's (vLLM reads /proc/<own pid>).
        files = ["--dev-bind", "/", "/", "--proc", "/proc", *(view.arguments() if view else [])]
        common = ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent", *files,
                  "--info-fd", str(info_fd), "--"]  # fmt: skip
        if self.user is None:
            uid, gid = str(os.getuid()), str(os.getgid())
            return [self.bwrap, "--unshare-user", "--uid", uid, "--gid", gid, *common, *argv]
        assert self.setpriv is not None
        # bwrap as root (it binds from the data directory), then setpriv drops to the user.
        drop = [self.setpriv, f"--reuid={self.user.uid}", f"--regid={self.user.gid}",
                "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
                "--"]  # fmt: skip
        caps = ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        return [self.bwrap, *caps, *common, *drop, *argv]

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
        argv += ["-t", inbound, "-u", "none", "-T", outbound, "-U", "none"]
        if self.user is not None:  # the sandbox has no user namespace of its own to join
            return [*argv, "--netns", f"/proc/{child_pid}/ns/net", "--netns-only"]
        return [*argv, str(child_pid)]

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


def _private_roots(spec: wire.ReplicaSpec, data_dir: Path) -> tuple[Path, ...]:
    """The folders no replica sees but for what is bound back: the data directory, and the
    volume storage and working copies' folder where they are elsewhere (`--volumes-path`)."""
    roots = [data_dir, *(Path(p) for p in (spec.volume_root, spec.volume_scratch) if p)]
    return _outermost(set(roots))


def _outermost(folders: set[Path]) -> tuple[Path, ...]:
    return tuple(sorted(f for f in folders if not _under(f, folders - {f})))


def _needs(
    launch: ReplicaLaunch, data_dir: Path, private: tuple[Path, ...]
) -> tuple[list[Path], list[Path]]:
    """What of the `private` folders the replica reads (its source, its image, the server's
    certificate, SHARED_READ of `data_dir`) and writes (its volumes)."""
    spec = launch.spec
    read = [Path(p) for p in (spec.source_dir, spec.ca_cert) if p]
    if launch.python:
        read.append(Path(launch.python).parents[2])  # the image: <hash>/venv/bin/python
    read += [data_dir / name for name in SHARED_READ if (data_dir / name).is_dir()]
    volumes = {Path(spec.volume_root or data_dir) / n for n in spec.function.volumes.values()}
    return [p for p in read if _under(p, private)], sorted(volumes)


def _as_replica_user(plain: Sandbox) -> Sandbox:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise OSError("setpriv is not installed (Debian: apt install util-linux)")
    return dataclasses.replace(plain, setpriv=setpriv, user=ReplicaUser.ensure(), shared=None)


def _probed(sandbox: Sandbox) -> Sandbox:
    """`sandbox`, once a probe went through it; in a thread of its own: the caller may be
    inside an event loop."""
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, sandbox.probe()).result()
    return sandbox


def grant(tree: Path, gid: int, write: bool) -> None:
    """Give group `gid` read (and `write`) access to everything in `tree`: folders and what is
    executable also get search/execute. Links are left alone (their targets are in the tree).
    A tree it may write also passes the access on to what is made in it later (by the server,
    whose umask is 077, or by a replica): a default ACL, where the filesystem has them."""
    add = stat.S_IRGRP | (stat.S_IWGRP if write else 0)
    if tree.is_file():  # the server's certificate
        _grant_one(tree, gid, add)
    for folder, _, files in os.walk(tree):
        _grant_one(Path(folder), gid, add | stat.S_IXGRP)
        if write:
            with contextlib.suppress(OSError):  # no ACLs here: files made later stay private
                os.setxattr(folder, "system.posix_acl_default", _default_acl(gid))
        for name in files:
            path = Path(folder, name)
            if not path.is_symlink():
                mode = path.stat().st_mode
                _grant_one(path, gid, add | (stat.S_IXGRP if mode & stat.S_IXUSR else 0))


def _default_acl(gid: int) -> bytes:
    """A POSIX default ACL (the kernel's xattr layout): owner rwx, group `gid` rwx, no others."""
    entries = [(0x01, 7, _NO_ID), (0x04, 0, _NO_ID), (0x08, 7, gid), (0x10, 7, _NO_ID),
               (0x20, 0, _NO_ID)]  # fmt: skip  # user, group, named group, mask, other
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


_NO_ID = 0xFFFFFFFF


def _grant_one(path: Path, gid: int, add: int) -> None:
    info = path.stat()
    if info.st_gid != gid:
        os.chown(path, -1, gid)
    if info.st_mode & add != add:
        path.chmod(stat.S_IMODE(info.st_mode) | add)


def _under(path: Path, folders: Iterable[Path]) -> bool:
    return any(path.is_relative_to(folder) for folder in folders)


def _runtime_paths() -> list[Path]:
    """What every replica runs: the server's Python and the folders on its PYTHONPATH and
    LD_LIBRARY_PATH."""
    entries = [e for var in ("PYTHONPATH", "LD_LIBRARY_PATH")
               for e in os.environ.get(var, "").split(os.pathsep)]  # fmt: skip
    return [Path(p) for p in {sys.prefix, sys.base_prefix, *entries} if p and Path(p).is_absolute()]


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
