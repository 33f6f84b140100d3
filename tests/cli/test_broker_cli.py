"""`profile-engine broker start|stop|status` against real broker processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from consumers.broker_process import free_port
from profile_engine.cli.main import cli


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["broker", *args])
    return result.exit_code, result.output


def test_status_without_a_broker_fails_with_one_line(tmp_path: Path) -> None:
    exit_code, output = _run("status", "--data-dir", str(tmp_path / "kafka"))

    assert exit_code != 0
    assert output.strip().count("\n") == 0
    assert "no broker running" in output


def test_stop_without_a_broker_says_so_and_succeeds(tmp_path: Path) -> None:
    exit_code, output = _run("stop", "--data-dir", str(tmp_path / "kafka"))

    assert exit_code == 0
    assert "no broker was running" in output


def test_start_refuses_a_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        port = occupant.getsockname()[1]
        exit_code, output = _run("start", "--data-dir", str(tmp_path / "k"), "--port", str(port))

    assert exit_code != 0
    assert f"port {port}" in output and "in use" in output


@pytest.mark.kafka
def test_start_status_stop_end_to_end(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "kafka")
    port = str(free_port())
    try:
        exit_code, output = _run("start", "--data-dir", data_dir, "--port", port)
        assert exit_code == 0, output
        assert f"127.0.0.1:{port}" in output

        exit_code, output = _run("start", "--data-dir", data_dir, "--port", port)
        assert exit_code == 0, output
        assert "already running" in output

        exit_code, output = _run("status", "--data-dir", data_dir)
        assert exit_code == 0, output
        assert "running" in output
    finally:
        exit_code, output = _run("stop", "--data-dir", data_dir)
    assert exit_code == 0, output
    assert "broker stopped" in output

    exit_code, output = _run("status", "--data-dir", data_dir)
    assert exit_code != 0
    assert not (tmp_path / "kafka" / "broker.pid").exists()
