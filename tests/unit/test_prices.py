"""The price table: public defaults, overrides from TOML, and refusals that list the choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from ember.server.metering.prices import DEFAULT_GPU, PriceError, PriceTable


def test_defaults_are_the_public_rates() -> None:
    prices = PriceTable()
    assert prices.gpu["H100"] == 0.001097 and prices.gpu["T4"] == 0.000164
    assert prices.rate("H100", 2, 0, 0) == pytest.approx(2 * 0.001097)
    assert prices.rate(None, 0, 1.0, 1024) == pytest.approx(prices.cpu_core + prices.memory_gib)
    assert prices.rate("some new board", 1, 0, 0) == 0.0  # metered, priced at nothing


def test_a_file_overrides_some_prices(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('cpu_core = 0.00002\n[gpu]\nh100 = 0.002\n"a100" = 0.0005\n')
    prices = PriceTable.load(path)
    assert prices.gpu["H100"] == 0.002 and prices.gpu["A100-40GB"] == 0.0005
    assert prices.gpu["L4"] == DEFAULT_GPU["L4"] and prices.cpu_core == 0.00002


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[gpu]\nH100 = -0.1\n", "gpu.H100 must be a finite price of 0 or more"),
        ("[gpu]\nRTX4090 = 0.1\n", "unknown GPU type 'RTX4090'; valid types: T4, L4, A10G"),
        ("cpu = 0.1\n", "unknown key 'cpu'; valid keys: cpu_core, memory_gib"),
        ('memory_gib = "cheap"\n', "memory_gib must be a number of USD per second"),
        ("memory_gib = nan\n", "must be a finite price"),
        ("gpu = 3\n", "gpu must be a table"),
        ("[gpu\n", "cannot read the price table"),
    ],
)
def test_bad_tables_are_refused_with_the_choices(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(PriceError, match=message.replace("(", r"\(")):
        PriceTable.load(path)
