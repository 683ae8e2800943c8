"""A sandbox's view of the data directory and the access handed to the replicas' user: the
arguments bwrap gets and the modes on disk (the sandbox itself: test_data_isolation.py); when a
server is single-tenant, and what its start says."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from ember import wire
from ember.backends import sandbox as sandbox_module
from ember.backends.base import Capabilities, ReplicaLaunch
from ember.backends.local import LocalBackend
from ember.backends.sandbox import Sandbox, View, grant
from ember.cli.server import _print_capabilities
from ember.runtime.mounts import working_dir


def test_the_view_hides_the_data_directory_and_binds_back_only_what_was_given() -> None:
    home = Path("/srv/ember")
    view = View(
        hidden=(home,),
        read=(home / "apps/a/v1",),
        write=((home / "volumes/v", home / "volumes/v"),),
        links=(("/proc/self/fd/1000/abc", home / "mnt/data"),),
    )
    args = view.arguments()
    assert args[:2] == ["--tmpfs", str(home)]
    made = [args[i + 1] for i, arg in enumerate(args) if arg == "--dir"]
    assert made == [f"{home}/apps", f"{home}/apps/a", f"{home}/mnt", f"{home}/volumes"]
    assert all(args[i - 2 : i] == ["--perms", "0755"] for i, a in enumerate(args) if a == "--dir")
    assert ["--ro-bind", f"{home}/apps/a/v1", f"{home}/apps/a/v1"] == args[-9:-6]
    assert ["--bind", f"{home}/volumes/v", f"{home}/volumes/v"] == args[-6:-3]
    assert ["--symlink", "/proc/self/fd/1000/abc", f"{home}/mnt/data"] == args[-3:]


def test_a_writable_tree_passes_access_on_to_files_made_in_it_later(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    (volume / "snapshots").mkdir(parents=True)
    (volume / "HEAD").write_text("s1")
    os.chmod(volume / "HEAD", 0o600)
    gid = os.getgid()
    grant(volume, gid, write=True)
    assert stat.S_IMODE((volume / "HEAD").stat().st_mode) & 0o060 == 0o060
    assert stat.S_IMODE((volume / "snapshots").stat().st_mode) & 0o070 == 0o070
    old = os.umask(0o077)
    try:
        (volume / "snapshots" / "later").write_text("written by the server after the start")
    finally:
        os.umask(old)
    # Needs ACL support on tmp_path's filesystem (ext4, xfs, tmpfs with POSIX ACLs).
    assert stat.S_IMODE((volume / "snapshots" / "later").stat().st_mode) & 0o060 == 0o060


def test_a_read_only_tree_is_readable_not_writable(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir(mode=0o700)
    (source / "app.py").write_text("x = 1\n")
    os.chmod(source / "app.py", 0o600)
    grant(source, os.getgid(), write=False)
    assert stat.S_IMODE((source / "app.py").stat().st_mode) == 0o640
    assert stat.S_IMODE(source.stat().st_mode) == 0o750


def _launch(tmp_path: Path, **spec: object) -> ReplicaLaunch:
    function = wire.FunctionSpec(name="f", volumes={"/data": "vol"})
    return ReplicaLaunch(
        spec=wire.ReplicaSpec(app_name="a", version=1, declared_name="app", module="m",
                              source_dir=str(tmp_path / "home/apps/a/v1"), function=function,
                              server_url="http://127.0.0.1:1", **spec),  # type: ignore[arg-type]
        assignment=wire.ReplicaAssignment(replica_id="r-1", token="t"),
        on_log=print,
    )  # fmt: skip


def test_volumes_kept_outside_the_data_directory_are_hidden_too(tmp_path: Path) -> None:
    """With --volumes-path (shared storage) the volumes are not under $EMBER_HOME: the view
    hides that folder as well, and binds back only this replica's volume and scratch."""
    home, shared = tmp_path / "home", tmp_path / "nfs"
    launch = _launch(tmp_path, volume_root=str(shared), volume_storage="shared")
    scratch = working_dir(launch.spec, "r-1")
    assert scratch == shared / ".replicas/r-1"
    view = Sandbox("bwrap", "pasta").view(launch, home, scratch)
    assert view.hidden == (home, shared)
    assert view.write == ((shared / "vol", shared / "vol"), (scratch, shared / ".replicas"))


def test_a_ray_nodes_working_copies_are_on_its_own_disk_in_its_view(tmp_path: Path) -> None:
    node, shared = tmp_path / "node", tmp_path / "nfs"
    launch = _launch(tmp_path, volume_root=str(shared), volume_storage="shared",
                     volume_scratch=str(node / "volumes"))  # fmt: skip
    scratch = working_dir(launch.spec, "r-1")
    assert scratch == node / "volumes/.replicas/r-1"
    view = Sandbox("bwrap", "pasta").view(launch, node, scratch)
    assert set(view.hidden) == {node, shared}
    assert (scratch, node / "volumes/.replicas") in view.write


def test_a_server_that_is_not_root_is_single_tenant(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision only: the probe (a real sandbox) is the integration tests'."""
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(sandbox_module, "_probed", lambda sandbox: sandbox)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    found, why_not = Sandbox.detect()
    assert why_not is None and found is not None
    assert found.user is None and found.shared == "the server does not run as root"


def test_root_that_cannot_make_the_user_is_single_tenant_and_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_user(plain: Sandbox) -> Sandbox:
        raise OSError("useradd ember-replica failed: cannot lock /etc/passwd")

    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(sandbox_module, "_probed", lambda sandbox: sandbox)
    monkeypatch.setattr(sandbox_module, "_as_replica_user", no_user)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    found, _ = Sandbox.detect()
    assert found is not None and found.user is None
    backend = LocalBackend((), {}, (), tmp_path / "run", found, None)
    assert backend.capabilities().tenancy_missing == (
        "replicas cannot run as ember-replica "
        "(useradd ember-replica failed: cannot lock /etc/passwd)"
    )


@pytest.mark.parametrize(
    ("where", "said"),
    [("this host", "Apps: isolated from each other (replicas run as an unprivileged user)"),
     ("the Ray cluster", "Apps: isolated from each other on each node where Ray runs as root (a "
                         "node that cannot says so in the logs of the replicas it runs)")],
)  # fmt: skip
def test_the_start_says_where_apps_are_isolated(
    where: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capabilities = Capabilities(gpus=(), cores=1, isolation_missing=None, where=where,
                                memory_limit_missing=None, cpu_limit_missing=None,
                                tenancy_missing=None)  # fmt: skip
    _print_capabilities(capabilities, gpu_fallback_cpu=False)
    assert said in " ".join(capsys.readouterr().out.split())
