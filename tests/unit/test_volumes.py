"""Volume trees on disk: names, paths, atomic commits, pruning, mount paths (no processes)."""

from __future__ import annotations

import fcntl
import os
import shutil
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


def test_commit_is_atomic_and_prunes(tmp_path: Path) -> None:
    tree = VolumeTree(tmp_path, "vol")
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


def test_dead_commits_are_cleaned_and_readers_retry(tmp_path: Path) -> None:
    tree = VolumeTree(tmp_path, "vol")
    tree.create()
    staging = tmp_path / "vol" / "staging"
    dead, live = staging / "deadbeef0000", staging / "11fe11fe11fe"
    dead.mkdir(parents=True)
    live.mkdir()
    dead.with_suffix(".lock").touch()  # its committer died: nobody holds the lock
    with live.with_suffix(".lock").open("a") as held:  # a commit under way elsewhere
        fcntl.flock(held, fcntl.LOCK_EX)
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


def test_deleted_volume_refuses_commits(tmp_path: Path) -> None:
    tree = VolumeTree(tmp_path, "vol")
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


def test_working_copy_commit_and_reload(tmp_path: Path) -> None:
    root = tmp_path / "volumes"
    VolumeTree(root, "vol").create()
    mounts = Mounts(root, "r-test")
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
    finally:
        mounts.unmount()
        os.close(MOUNTS_FD)  # this test process is not a replica
    assert not (root / ".replicas" / "r-test").exists()
