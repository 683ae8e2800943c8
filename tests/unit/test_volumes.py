"""Volume trees on disk: names, paths, atomic commits, pruning, mount paths (no processes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import ember
from ember.runtime.mounts import (
    MOUNTS_FD,
    Mounts,
    check_mount_path,
    ensure_mount_link,
    mount_link,
)
from ember.runtime.volume_storage import SharedFilesystem, storage_for
from ember.runtime.volumes import VolumeError, VolumeNotFound, VolumeTree, check_name, volume_path
from ember.sdk.exceptions import InvalidError


def test_names_and_paths() -> None:
    assert check_name("models-v1.2_x") == "models-v1.2_x"
    for bad in ("", "-x", ".hidden", "a/b", "sp ace", "x" * 65):
        with pytest.raises(VolumeError, match="invalid volume name"):
            check_name(bad)
    assert volume_path("/") == volume_path("") == volume_path(".") == ""
    assert volume_path("/a//b/./c/") == volume_path("a/b/c") == "a/b/c"
    for escape in ("..", "/a/../../etc/passwd", "a/.."):
        with pytest.raises(VolumeError, match=r"contains '\.\.'"):
            volume_path(escape)


def test_mount_paths() -> None:
    assert check_mount_path("/models/") == check_mount_path("/models") == "/models"
    assert check_mount_path("//data/./x") == "/data/x"
    cases = {
        "models": "must be absolute",
        "/": "cannot be mounted at '/'",
        "/a/../b": "must not contain '..'",
        "/proc/x": "system folder /proc",
        "/usr": "system folder /usr",
        "/etc/ember": "system folder /etc",
    }
    for path, message in cases.items():
        with pytest.raises(VolumeError, match=message):
            check_mount_path(path)
    assert check_mount_path("/usrdata") == "/usrdata"
    # The SDK refuses the same paths when the function is decorated.
    app = ember.App("mounts")
    with pytest.raises(InvalidError, match="system folder /proc"):
        app.function(volumes={"/proc/x": ember.Volume.from_name("v")})(lambda: None)
    with pytest.raises(InvalidError, match="invalid volume name"):
        ember.Volume.from_name("no/slashes")


@pytest.fixture(params=["local", "shared"])
def kind(request: pytest.FixtureRequest) -> str:
    """Both storage drivers keep the same semantics (on this machine's disk, here)."""
    return str(request.param)


def test_commit_is_atomic_and_prunes(tmp_path: Path, kind: str) -> None:
    tree = VolumeTree(storage_for(kind, tmp_path), "vol")
    with pytest.raises(VolumeNotFound, match="ember volume create vol"):
        tree.head()
    tree.create()
    first = tree.head()

    def write(text: str) -> Callable[[Path], None]:
        def build(staging: Path) -> None:
            staging.mkdir()
            (staging / "f.txt").write_text(text)

        return build

    def broken(staging: Path) -> None:
        write("half")(staging)
        raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        tree.commit(broken)
    assert tree.head() == first  # a failed commit leaves the last committed state
    assert not list((tmp_path / "vol" / "staging").iterdir())

    second = tree.commit(write("two"))
    third = tree.commit(write("three"))
    assert tree.head() == third
    # HEAD and the one before it stay; older snapshots go.
    assert {p.name for p in tree.snapshots.iterdir()} == {second, third}
    out = tmp_path / "out"
    assert tree.checkout(out) == third
    assert (out / "f.txt").read_text() == "three"
    # The checkout is a copy: writing through it never touches the snapshot.
    (out / "f.txt").write_text("scribble")
    assert (tree.snapshots / third / "f.txt").read_text() == "three"
    assert os.stat(out / "f.txt").st_ino != os.stat(tree.snapshots / third / "f.txt").st_ino


def test_dead_commits_are_cleaned_and_readers_retry(tmp_path: Path, kind: str) -> None:
    storage = storage_for(kind, tmp_path)
    tree = VolumeTree(storage, "vol")
    tree.create()
    staging = tmp_path / "vol" / "staging"
    dead, live = staging / "deadbeef0000", staging / "11fe11fe11fe"
    dead.mkdir(parents=True)
    live.mkdir()
    dead.with_suffix(".lock").touch()  # its committer died: nobody holds the lock
    with storage.exclusive(live.with_suffix(".lock")):  # a commit under way elsewhere
        latest = tree.commit(lambda staging: staging.mkdir())
    assert not dead.exists() and not dead.with_suffix(".lock").exists()
    assert live.exists()

    calls: list[str] = []

    def pruned_once(snapshot: Path) -> str:
        calls.append(snapshot.name)
        if len(calls) == 1:  # a commit lands and prunes our snapshot while we read it
            old = tree.head()
            tree.commit(lambda staging: staging.mkdir())
            tree.commit(lambda staging: staging.mkdir())
            shutil.rmtree(tree.snapshots / old, ignore_errors=True)
            raise FileNotFoundError(snapshot)
        return snapshot.name

    assert tree.read(pruned_once) == tree.head() != latest
    assert len(calls) == 2


def test_deleted_volume_refuses_commits(tmp_path: Path, kind: str) -> None:
    tree = VolumeTree(storage_for(kind, tmp_path), "vol")
    tree.create()
    tree.delete()
    assert not (tmp_path / "vol").exists()
    with pytest.raises(VolumeNotFound):
        tree.commit(lambda staging: staging.mkdir())


def test_mount_links(tmp_path: Path) -> None:
    path = str(tmp_path / "deep" / "mnt")
    ensure_mount_link(path)
    ensure_mount_link(path)  # idempotent
    assert os.readlink(path) == mount_link(path)
    with pytest.raises(VolumeError, match="is inside the mount path"):
        ensure_mount_link(path + "/inner")
    (tmp_path / "taken").mkdir()
    with pytest.raises(VolumeError, match="already exists as a folder"):
        ensure_mount_link(str(tmp_path / "taken"))
    (tmp_path / "file").write_text("")
    with pytest.raises(VolumeError, match="cannot create the folder"):
        ensure_mount_link(str(tmp_path / "file" / "mnt"))


def test_working_copy_commit_and_reload(tmp_path: Path, kind: str) -> None:
    root, scratch = tmp_path / "volumes", tmp_path / "node-disk"
    storage = storage_for(kind, root)
    VolumeTree(storage, "vol").create()
    mounts = Mounts(storage, "r-test", scratch)
    try:
        mounts.mount({str(tmp_path / "mnt"): "vol"})
        mounted = tmp_path / "mnt"
        (mounted / "a.txt").write_text("one")
        copy = mounts.copies["vol"]
        copy.commit()
        (mounted / "a.txt").write_text("uncommitted")
        copy.reload()
        assert (mounted / "a.txt").read_text() == "one"
        assert os.path.realpath(mounted) == str(copy.path)
        # Shared storage keeps working copies on the node's own disk, local beside the trees.
        assert copy.path.is_relative_to(scratch if kind == "shared" else root)
    finally:
        mounts.unmount()
        os.close(MOUNTS_FD)  # this test process is not a replica
    assert not (root / ".replicas" / "r-test").exists()
    assert not (scratch / ".replicas" / "r-test").exists()


def test_shared_locks_hold_between_threads_of_one_process(tmp_path: Path) -> None:
    """Classic fcntl locks belong to a process, so a thread's commit could prune another
    thread's staging folder; open-file-description locks belong to the open file."""
    tree = VolumeTree(SharedFilesystem(tmp_path), "vol")
    tree.create()
    building, other_done = threading.Event(), threading.Event()
    landed: list[str] = []

    def slow(staging: Path) -> None:
        staging.mkdir()
        (staging / "slow.txt").write_text("slow")
        building.set()
        assert other_done.wait(30)  # the other commit (and its pruning) happens meanwhile

    thread = threading.Thread(target=lambda: landed.append(tree.commit(slow)))
    thread.start()
    assert building.wait(30)
    tree.commit(lambda staging: staging.mkdir())
    other_done.set()
    thread.join(30)
    assert landed == [tree.head()]  # the slow commit survived the other's pruning and won
    assert (tree.snapshots / tree.head() / "slow.txt").read_text() == "slow"


def test_a_shared_lock_is_seen_by_another_process(tmp_path: Path) -> None:
    storage = SharedFilesystem(tmp_path)
    lock = tmp_path / "lock"
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as holder:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == b"held\n"
        assert storage.held(lock)  # as a node sees another node's commit under way
        holder.stdin.close()
        holder.wait(30)
    assert not storage.held(lock)  # its holder is gone: the kernel freed it


HOLD_LOCK = """
import sys
from pathlib import Path
from ember.runtime.volume_storage import SharedFilesystem
with SharedFilesystem(Path(".")).exclusive(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""
