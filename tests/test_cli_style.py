"""One CLI style: every command of `facelink`, `facelink bench` and `facelink-edge` is argparse and every option and
argument has help text; the top-level help is light."""
from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys

import pytest

from facelink.cloud import cli as cloud_cli
from facelink.edge import cli as edge_cli

GROUPS = {"bench": cloud_cli.BENCH_COMMANDS, "models": cloud_cli.MODELS_COMMANDS}
COMMANDS = ([("facelink", name) for name in cloud_cli.COMMANDS if name not in GROUPS]
            + [(f"facelink {group}", name) for group, table in GROUPS.items() for name in table])


def _edge_commands():
    ap = edge_cli.build_parser() if hasattr(edge_cli, "build_parser") else None
    if ap is None:
        return []
    subs = [a for a in ap._actions if isinstance(a, argparse._SubParsersAction)]
    return [("facelink-edge", name) for s in subs for name in s.choices]


def _run_help(prog: str, name: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), pytest.raises(SystemExit) as e:
        if prog == "facelink":
            cloud_cli.main([name, "--help"])
        elif prog.startswith("facelink "):
            cloud_cli.main([prog.split()[1], name, "--help"])
        else:
            edge_cli.main([name, "--help"])
    assert e.value.code == 0, out.getvalue()


@pytest.mark.parametrize("prog,name", COMMANDS + _edge_commands(), ids=lambda v: str(v))
def test_every_option_has_help(prog, name, monkeypatch):
    undocumented = []
    original = argparse.ArgumentParser.add_argument

    def recording(self, *args, **kwargs):
        action = original(self, *args, **kwargs)
        if not kwargs.get("help") and action.help != argparse.SUPPRESS and "-h" not in args:
            undocumented.append(f"{self.prog}: {'/'.join(args) or action.dest}")
        return action

    monkeypatch.setattr(argparse.ArgumentParser, "add_argument", recording)
    monkeypatch.setattr(argparse._ArgumentGroup, "add_argument", recording)
    _run_help(prog, name)
    assert undocumented == []


def test_top_level_help_is_light():
    """`facelink --help` and `facelink-edge --help` import neither torch nor a command's module, and warn about
    nothing."""
    code = (
        "import sys, contextlib, io\n"
        "from facelink.cloud import cli as c\nfrom facelink.edge import cli as e\n"
        "for m in (c, e):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try: m.main(['--help'])\n"
        "        except SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'compressai', 'onnxruntime', 'cv2', 'facelink.benchmarks')\n"
        "         if m in sys.modules]\n"
        "print(heavy)\n"
    )
    r = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]" and r.stderr == ""


def test_unknown_command_is_an_error(capsys):
    assert cloud_cli.main(["no-such-command"]) == 2
    assert cloud_cli.main(["bench", "no-such-benchmark"]) == 2
    assert "invalid choice" in capsys.readouterr().err
