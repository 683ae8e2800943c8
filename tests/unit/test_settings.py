"""ClientSettings precedence: environment, then config.toml, then nothing; what ServerSettings
derives from its options."""

from __future__ import annotations

from pathlib import Path

from ember.config_file import write_client_config
from ember.sdk.config import ClientSettings
from ember.server.settings import ServerSettings


def test_environment_beats_config_file(tmp_path: Path) -> None:
    write_client_config(tmp_path, "http://127.0.0.1:1", "from-file")
    env = {"EMBER_HOME": str(tmp_path)}
    assert ClientSettings.load(env).token == "from-file"
    assert ClientSettings.load(env).server_url == "http://127.0.0.1:1"
    env["EMBER_TOKEN"] = "from-env"
    assert ClientSettings.load(env).token == "from-env"


def test_nothing_configured(tmp_path: Path) -> None:
    settings = ClientSettings.load({"EMBER_HOME": str(tmp_path / "empty")})
    assert not settings.configured


def test_config_file_values_round_trip_whatever_they_hold(tmp_path: Path) -> None:
    awkward = 'C:\\certs\\"quoted" ünïcode \x7f\t\n=#[x]'
    write_client_config(tmp_path, "http://h:1", awkward, ca_cert=tmp_path / awkward)
    settings = ClientSettings.load({"EMBER_HOME": str(tmp_path)})
    assert settings.token == awkward
    assert settings.ca_cert == str(tmp_path / awkward)
    assert (tmp_path / "config.toml").stat().st_mode & 0o077 == 0


def test_replicas_on_other_machines_reach_the_advertised_url(tmp_path: Path) -> None:
    local = ServerSettings(home=tmp_path, host="0.0.0.0", port=9000)
    assert local.replica_server_url == "http://127.0.0.1:9000"  # through the sandbox's loopback
    cluster = ServerSettings(
        home=tmp_path, host="0.0.0.0", port=9000, advertise_url="http://10.0.0.2:9000/"
    )
    assert cluster.replica_server_url == "http://10.0.0.2:9000"


def test_volumes_path_picks_the_shared_driver(tmp_path: Path) -> None:
    assert ServerSettings(home=tmp_path).volume_storage == "local"
    assert ServerSettings(home=tmp_path).volumes_dir == tmp_path / "volumes"
    shared = ServerSettings(home=tmp_path, volumes_path=Path("/mnt/ember"))
    assert (shared.volume_storage, shared.volumes_dir) == ("shared", Path("/mnt/ember"))
