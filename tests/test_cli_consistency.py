"""One CLI (issue #13 item 5): an option means the same thing on every verb, every option has help text, every
--json is NDJSON, values are checked by click types, a closed pipe ends quietly, the table fits 80 columns."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest

from edge.paths import repo_root
from tests.fixtures_bundle import ecgret_env, run_ecgret, test_bundle  # noqa: F401


def _commands():
    from edge.cli import main

    def walk(cmd, path):
        yield path, cmd
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from walk(sub, path + (name,))
    return dict(walk(main, ("ecgret",)))


def _option(cmd, flag):
    return next((p for p in cmd.params if isinstance(p, click.Option) and flag in p.opts + p.secondary_opts), None)


def test_every_option_has_help_text():
    missing = [f"{' '.join(path)} {p.opts[0]}" for path, cmd in _commands().items() for p in cmd.params
               if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert missing == []


@pytest.mark.parametrize("flag,verbs", [
    ("--seconds", ["listen", "demo", "simulate"]),
    ("--leads", ["query", "listen", "demo", "enroll"]),
    ("--save", ["listen", "demo"]),
    ("--report", ["query", "listen", "demo"]),
    ("--no-overlay", ["query", "listen", "demo"]),
    ("--baud", ["listen", "demo"]),
    ("--board", ["listen", "demo", "simulate"]),
    ("--json", ["query", "info", "bench", "demo", "listen", "ports", "cases list", "cases codes"]),
    ("--top-k", ["query", "listen", "demo"]),
])
def test_an_option_is_the_same_on_every_verb(flag, verbs):
    cmds = _commands()
    opts = [_option(cmds[("ecgret", *v.split())], flag) for v in verbs]
    assert all(o is not None for o in opts), [v for v, o in zip(verbs, opts) if o is None]
    assert len({type(o.type).__name__ for o in opts}) == 1
    if flag == "--board":
        assert all(tuple(o.type.choices) == ("native", "cyton", "ascii") for o in opts)
    if flag not in ("--seconds", "--leads", "--board"):   # those say what the verb does with them
        assert len({o.help for o in opts}) == 1, {o.help for o in opts}


@pytest.mark.slow
def test_values_are_checked_by_click(ecgret_env, shared_data):
    rec = shared_data / "cinc2021-sample" / "E07509"
    for args, needle in ((["query", "--fs", "-5", rec], "a sampling rate must be more than 0"),
                         (["query", "--fs", "nan", rec], "a sampling rate"),
                         (["listen", "--port", "loop://", "--seconds", "nan"], "--seconds"),
                         (["demo", "--speed", "-1"], "--speed"),
                         (["query", "--report", "/nonexistent/x.html", rec], "/nonexistent does not exist")):
        p = run_ecgret(args, ecgret_env)
        assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
        assert "tmp" not in p.stderr, p.stderr


def test_top_k_beyond_the_archive_says_so(ecgret_env, shared_data, test_bundle):
    size = json.loads((test_bundle / "manifest.json").read_text())["index"]["n_items"]
    p = run_ecgret(["query", "--json", "--top-k", "5000", shared_data / "cinc2021-sample" / "E07509"], ecgret_env)
    assert p.returncode == 0, p.stderr
    assert f"--top-k 5000: the archive holds {size:,} cases; an answer lists at most {size:,}" in p.stderr
    n = len(json.loads(p.stdout)["matches"])
    assert 10 < n <= size
    if n < size:                                       # Annoy may return fewer: that is said too
        assert f"the index returned {n} of the {size} cases asked for" in p.stderr


def test_info_json_is_one_line_with_the_stamp(ecgret_env):
    p = run_ecgret(["info", "--json"], ecgret_env)
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and len(lines) == 1
    d = json.loads(lines[0])
    assert d["bundle_id"] == d["id"] and d["ecgret_version"] and d["utc"].endswith("Z")


def test_a_closed_pipe_ends_quietly(ecgret_env, shared_data):
    files = [str(shared_data / "cinc2021-sample" / f"E075{i:02d}") for i in range(0, 20)]
    p = subprocess.Popen([sys.executable, "-m", "edge.cli", "query", "--json", *files], env=ecgret_env,
                         cwd=repo_root(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()
    p.stdout.close()                                   # what `| head -1` does
    err = p.stderr.read()
    p.wait(120)
    assert json.loads(first)["ok"]
    assert p.returncode == 0 and "Broken pipe" not in err and "Traceback" not in err, err


@pytest.mark.slow
def test_the_table_fits_80_columns_without_losing_the_report(ecgret_env, shared_data):
    p = run_ecgret(["query", "--json", shared_data / "cinc2021-sample" / "E07509"], ecgret_env)
    reports = [m["report"] for m in json.loads(p.stdout)["matches"]]
    p = run_ecgret(["query", shared_data / "cinc2021-sample" / "E07509"], dict(ecgret_env, COLUMNS="80"))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert max(len(x) for x in lines) <= 80, max(lines, key=len)
    flat = " ".join(" ".join(lines).split())
    short = [r for r in reports if 0 < len(r) <= 150]      # reports up to 3 lines are shown whole
    assert short and all(" ".join(r.split()) in flat for r in short)
    assert "NOT A DIAGNOSIS" in p.stdout


@pytest.mark.slow
def test_demo_streams_an_ascii_board_and_saves(ecgret_env, tmp_path):
    save = tmp_path / "saved"
    p = run_ecgret(["demo", "--board", "ascii", "--speed", "0", "--seconds", "4", "--json", "--save", save,
                    "--baud", "115200", "--no-overlay"], ecgret_env, timeout=180)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["leads"] == ["II"] and res["lead_limits"]["leads"] == ["II"]
    assert "IMI" in res["lead_limits"]["cannot_show"]
    assert "acquired 2000 samples (4.0 s) at 500 Hz, 1 channels" in p.stderr
    saved = json.loads(next(save.glob("*.json")).read_text())
    assert saved["bundle_id"] == res["bundle_id"] and saved["matches"] == res["matches"]


@pytest.mark.slow
def test_simulate_takes_seconds_and_the_old_duration_with_a_warning(shared_data):
    env = dict(os.environ, PYTHONPATH=str(repo_root()))
    for flag in ("--seconds", "--duration"):
        p = subprocess.run([sys.executable, "-m", "edge.cli", "simulate", "--speed", "0", "--loop", flag, "2"],
                           env=env, cwd=repo_root(), capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert "simulator stopped" in p.stderr
        assert ("--duration is deprecated; use --seconds" in p.stderr) == (flag == "--duration")
