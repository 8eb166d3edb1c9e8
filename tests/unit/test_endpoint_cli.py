"""`ferry serve-endpoint`'s arguments: what it refuses before it listens or loads anything (the command serving a
model is tested over HTTP in tests/integration/test_endpoint_server.py)."""

from __future__ import annotations

import pytest

from ferry.cli import main


def test_the_default_model_missing_says_to_build_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["serve-endpoint"]) == 2
    error = capsys.readouterr().err
    assert "build/endpoints/smollm2: no such folder" in error
    assert "make llm" in error


def test_a_missing_model_folder_is_a_usage_error(tmp_path, capsys):
    assert main(["serve-endpoint", "--model", str(tmp_path / "nowhere")]) == 2
    assert f"--model {tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err


def test_a_folder_without_a_model_is_a_usage_error(tmp_path, capsys):
    assert main(["serve-endpoint", "--model", str(tmp_path), "--port", "0"]) == 2
    assert "no config.json" in capsys.readouterr().err


@pytest.mark.parametrize("arguments", [["--endpoint-name", "bad_name"], ["--endpoint-name", "-x"],
                                       ["--endpoint-name", "x" * 64], ["--port", "70000"], ["--port", "-1"],
                                       ["--threads", "0"]])
def test_bad_arguments_exit_2(arguments, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["serve-endpoint", *arguments])
    assert exited.value.code == 2
    assert arguments[0] in capsys.readouterr().err


def test_the_command_is_listed(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "serve-endpoint" in capsys.readouterr().out


def test_help_names_both_paths(capsys):
    with pytest.raises(SystemExit):
        main(["serve-endpoint", "--help"])
    out = capsys.readouterr().out
    assert "/invocations" in out and "/endpoints/NAME/invocations" in out
