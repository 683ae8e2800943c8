"""A template process: prepare a pool's code once, then fork replicas that only have to serve.

Started by a backend as `python -m ember.runtime.template`, with the pool's ReplicaSpec and an
assignment of its own (status pipe, control socket). It imports the user's module and runs the
`@enter(snap=True)` hooks once, refusing any that initialised CUDA (a forked child cannot use a
CUDA context it inherited), and reports ready. Then each ForkRequest on the control socket (with
three fds: listening socket, status pipe, log pipe) becomes a child that mounts its volumes and
runs `serve()`: the `@enter()` hooks, the listener, the inputs. Forking is copy-on-write: what the
snap hooks loaded (modules, weights in host memory) costs a child neither time nor memory.

The template reaps its children, tells the backend when one exits, and kills what an exited child
left running (processes that carry its EMBER_REPLICA_ID; the template is their subreaper).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import selectors
import signal
import socket
import sys
import threading
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import NoReturn

from ember import wire
from ember.process import become_subreaper, die_with_parent, end_replica, kill_replicas
from ember.runtime import phases
from ember.runtime.mounts import mount_volumes
from ember.runtime.replica import Prepared, boot, prepare, report, run_serving_loop, serve


class CudaInSnapHook(Exception):
    """A snap hook initialised CUDA: the template cannot fork replicas that would work."""


def refuse_cuda(hook: str) -> None:
    """After each snap hook: CUDA must not be initialised in a process that forks."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise CudaInSnapHook(
            f"the snap hook {hook} initialised CUDA; a template forks its replicas, and a forked "
            "process cannot use CUDA its parent initialised. Move the GPU work to an "
            "`@ember.enter()` hook (snap=False), and keep loading to host memory in the snap hook"
        )


def main() -> NoReturn:
    spec, assignment = boot()
    name = f"{spec.app_name}.{spec.function.name} (v{spec.version})"
    print(f"template for {name} starting", flush=True)
    try:
        prepared = asyncio.run(prepare(spec, check_hook=refuse_cuda))
    except BaseException as exc:  # noqa: BLE001 - the server falls back to fresh starts
        traceback.print_exc()
        message = "".join(traceback.format_exception_only(exc)).strip()
        report(assignment, wire.ReplicaStatus(state="failed", message=message))
        os._exit(1)
    if threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.main_thread())
        print(f"warning: threads started by the user's code are not forked: {names}", flush=True)
    report(assignment, wire.ReplicaStatus(state="ready", phases=phases.take()))
    Forker(prepared, socket.socket(fileno=assignment.control_fd)).run()


class Forker:
    """Serve fork requests; reap children; say when one exits."""

    def __init__(self, prepared: Prepared, control: socket.socket) -> None:
        self.prepared, self.control = prepared, control
        self.children: dict[int, str] = {}  # pid -> replica id
        # Children are forked from a thread of their own. Not the main thread: GNU OpenMP's
        # thread pool belongs to the thread that ran a parallel kernel (torch on the CPU, in an
        # async snap hook), its workers do not survive fork, and a child forked from that thread
        # hangs at its first parallel kernel there. Not a fresh thread each time: a child's
        # parent-death signal fires when the thread that forked it exits.
        self.fork_thread = ThreadPoolExecutor(1, thread_name_prefix="fork")

    def run(self) -> NoReturn:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd is what matters
        with selectors.DefaultSelector() as selector:
            selector.register(self.control, selectors.EVENT_READ, "control")
            selector.register(wake_r, selectors.EVENT_READ, "children")
            while True:
                for key, _ in selector.select():
                    if key.data == "children":
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_r, 512)
                        self.reap()
                    else:
                        self.fork_next()

    def fork_next(self) -> None:
        message, fds, _, _ = socket.recv_fds(self.control, 1 << 20, maxfds=3)
        if not message:
            os._exit(0)  # the backend is gone
        request = wire.ForkRequest.model_validate_json(message)
        sys.stdout.flush()
        sys.stderr.flush()
        with warnings.catch_warnings():  # Python 3.12 warns on fork with threads: ours are idle
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = self.fork_thread.submit(self._fork, request, fds).result()
        for fd in fds:
            os.close(fd)
        self.children[pid] = request.assignment.replica_id
        self.tell(wire.TemplateEvent(replica_id=request.assignment.replica_id, forked=pid))

    def _fork(self, request: wire.ForkRequest, fds: list[int]) -> int:
        pid = os.fork()
        if pid == 0:  # this thread is the child's only one, its main thread
            self.control.close()
            become_replica(self.prepared, request, fds)
        return pid

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            replica_id = self.children.pop(pid, None)
            if replica_id is not None:  # its leftovers, had it no time to kill them itself
                kill_replicas([replica_id])
                code = os.waitstatus_to_exitcode(status)
                self.tell(wire.TemplateEvent(replica_id=replica_id, exit_code=code))

    def tell(self, event: wire.TemplateEvent) -> None:
        self.control.send(event.model_dump_json().encode())  # one packet, one event


def become_replica(prepared: Prepared, request: wire.ForkRequest, fds: list[int]) -> NoReturn:
    """In the forked child: take the replica's identity, then serve until stopped."""
    listener, status, log = fds
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    die_with_parent()
    become_subreaper()
    os.environ.update(request.env)
    _reseed()
    assignment = request.assignment.model_copy(update={"listen_fd": listener, "status_fd": status})
    spec = prepared.spec
    print(f"replica {assignment.replica_id} forked from the template", flush=True)
    code = 0
    try:
        mounts = mount_volumes(spec, assignment.replica_id)
        run_serving_loop(serve(prepared, assignment, mounts))
    except BaseException as exc:  # noqa: BLE001 - print, report, exit: the server replaces it
        traceback.print_exc()
        message = "".join(traceback.format_exception_only(exc)).strip()
        report(assignment, wire.ReplicaStatus(state="failed", message=message))
        code = 1
    end_replica(assignment.replica_id)
    sys.stdout.flush()
    os._exit(code)


def _reseed() -> None:
    """Forked children would share the template's random state: give each its own."""
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.seed()


if __name__ == "__main__":
    main()
