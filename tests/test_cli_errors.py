"""The CLI a new user meets (`ufm.cli`): every mistake is one line on stderr and exit 2, before
any work; Ctrl-C is one line and exit 130; a diverging run says so (exit 1)."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from ufm import cli


def _run(argv, capsys):
    """``(exit status, stdout, stderr)`` of ``ufm argv`` in-process (argparse's own exits included)."""
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _user_error(argv, capsys, *words, seconds: float = 20.0):
    t0 = time.perf_counter()
    code, out, err = _run(argv, capsys)
    took = time.perf_counter() - t0
    assert code == 2, (argv, code, err)
    assert err.startswith("ufm: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)
    assert took < seconds, f"{argv}: refused only after {took:.1f} s (work was done first)"
    return err


ODE = ["dynamics", "ode", "--dim", "20", "--time", "0.5", "--points", "3", "--sgd-runs", "2"]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["train", "--steps", "0"], ("--steps", ">= 1")),
        (["train", "--steps", "-3"], ("--steps",)),
        (["dynamics", "catapult", "--samples", "0"], ("--samples", ">= 1")),
        (["dynamics", "dmap", "--steps", "-5"], ("--steps",)),
        (["dynamics", "align", "--checkpoints", "0"], ("--checkpoints",)),
        (["dynamics", "ode", "--sgd-runs", "0"], ("--sgd-runs",)),
        (["real", "--depth", "0"], ("--depth",)),
        (["analyze", "x.npz", "--dense-max", "0"], ("--dense-max",)),
    ],
)
def test_zero_or_negative_counts(argv, words, capsys):
    _user_error(argv, capsys, *words)


@pytest.mark.parametrize(
    "argv, words",
    [
        ([*ODE, "--lr", "nan"], ("--lr", "finite")),
        ([*ODE, "--mean-scale", "inf"], ("--mean-scale", "finite")),
        (["train", "--lambda-H", "nan"], ("--lambda-H", "finite")),
        (["dynamics", "catapult", "--spike-ratio", "inf"], ("--spike-ratio", "finite")),
        (["dynamics", "align", "--snr", "-inf"], ("--snr",)),
    ],
)
def test_nan_or_infinite_floats(argv, words, capsys):
    _user_error(argv, capsys, *words)


@pytest.mark.parametrize("flag, value", [("--rtol", "0"), ("--atol", "-1e-9"), ("--rtol", "nan")])
def test_tolerances_must_be_positive(flag, value, capsys):
    _user_error([*ODE, f"{flag}={value}"], capsys, flag, "> 0")


def test_rank_above_the_dimension(capsys):
    _user_error(["dynamics", "dmap", "--dim", "5", "--rank", "6"], capsys, "--rank 6", "--dim 5")
    argv = ["dynamics", "catapult", "--target", "polynomial", "--rank", "12", "--dim", "10"]
    _user_error(argv, capsys, "--rank 12", "--dim 10")


def test_seed_follows_one_rule_in_every_command(capsys):
    for argv in (["train"], ["real"], ["dynamics", "dmap"], ["dynamics", "catapult"], ["dynamics", "align"], ODE):
        _user_error([*argv, "--seed", "-1"], capsys, "--seed", ">= 0")


def test_empty_or_corrupted_npz(tmp_path, capsys):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _user_error(["analyze", str(empty)], capsys, "not a readable .npz", "empty")
    good = tmp_path / "good.npz"
    np.savez(good, H1=np.ones((4, 3)), labels=np.arange(4) % 2)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    _user_error(["analyze", str(truncated)], capsys, "not a readable .npz")
    flipped = tmp_path / "flipped.npz"  # a member whose bytes changed: the zip checksum fails
    with zipfile.ZipFile(good) as z:
        name, data = z.namelist()[0], bytearray(z.read(z.namelist()[0]))
    data[-1] ^= 0xFF
    with zipfile.ZipFile(flipped, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(name, bytes(data))
    raw = bytearray(flipped.read_bytes())
    i = raw.index(bytes(data))  # corrupt the stored bytes after the CRC was written
    raw[i] ^= 0xFF
    flipped.write_bytes(bytes(raw))
    _user_error(["analyze", str(flipped)], capsys, "not a readable .npz", "corrupted")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["dynamics", "align", "--task", "kgmm", "--dim", "2000000", "--num-classes", "10"], ("GiB", "--dim")),
        (["dynamics", "dmap", "--dim", "100000", "--steps", "100000000"], ("GiB", "--steps")),
        (["dynamics", "catapult", "--width", "100000000", "--samples", "1000"], ("GiB", "--width")),
        ([*ODE[:2], "--dim", "50000000", "--points", "1000"], ("GiB", "--dim")),
        (["train", "-n", "100000000", "-d", "1000"], ("GiB", "--per-class")),
        (["verify", "-n", "100000000", "-d", "1000", "--from-optimum"], ("GiB", "--per-class")),
    ],
)
def test_sizes_beyond_the_machine_are_refused_before_allocating(argv, words, capsys):
    _user_error(argv, capsys, *words, seconds=10.0)


def test_dmap_on_a_diverging_run_says_so(capsys):
    code, out, err = _run(["dynamics", "dmap", "--lr", "3", "--steps", "400"], capsys)
    assert code == 1 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("ufm: error: the run diverged") and "learning rate" in last, err


def test_ctrl_c_is_one_line_and_exit_130(tmp_path):
    """SIGINT while training: exit 130 within a few seconds, one line, no traceback."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # a child would inherit it (`cmd &` in a script)
        pytest.skip("SIGINT is ignored in this process, so it would be in ufm's")
    argv = [sys.executable, "-m", "ufm", "train", "-K", "6", "-n", "40", "-L", "4", "-d", "40"]
    # ridges of 1e-5: ‖∇L‖ is still 2e-3 after 30 000 steps, so the run cannot converge and
    # exit 0 before the signal arrives (with the default 1e-3 it did in 3.9 s, 3 runs in 20)
    argv += ["--lambda-H", "1e-5", "--lambda-W", "1e-5", "--steps", "100000000", "--log-every", "200"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stderr.readline()  # "ufm: training (at most ...) ..." once the work started
        assert first.startswith("ufm: training"), first
        time.sleep(1.0)
        sent = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        took = time.perf_counter() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines() == ["ufm: interrupted: train stopped (Ctrl-C)"], err
    assert took < 15, f"took {took:.1f} s to stop"


def test_analyze_dense_max_default_is_the_package_threshold():
    from ufm.curvature import DEFAULT_DENSE_MAX

    args = cli.build_parser().parse_args(["analyze", "x.npz"])
    assert args.dense_max == DEFAULT_DENSE_MAX


def test_interrupt_line_says_how_to_resume_where_a_checkpoint_is_used():
    import argparse

    from ufm.cli._main import _interrupted  # private: the text of the one line is the subject

    with_ckpt = argparse.Namespace(command="real", checkpoint="run.npz")
    assert _interrupted(with_ckpt) == (
        "ufm: interrupted: real stopped (Ctrl-C); rerun the same command to resume from run.npz"
    )
    assert _interrupted(argparse.Namespace(command="dynamics", task="dmap")) == (
        "ufm: interrupted: dynamics dmap stopped (Ctrl-C)"
    )


class _DelRaises:
    def __del__(self):
        raise KeyboardInterrupt


def _gc_callback_raises(phase, info):
    gc.callbacks.remove(_gc_callback_raises)
    raise KeyboardInterrupt


@pytest.mark.parametrize("where", ["__del__", "gc callback"])
def test_a_ctrl_c_python_would_ignore_is_sent_again(where, capsys):
    """A KeyboardInterrupt raised in a ``__del__`` or a gc callback (where a real Ctrl-C once
    landed, in JAX's) is not lost while a command runs: it is raised again in ordinary code."""
    from ufm.cli._main import _ctrl_c_not_lost

    with pytest.raises(KeyboardInterrupt), _ctrl_c_not_lost():
        if where == "__del__":
            _DelRaises()
        else:
            gc.callbacks.append(_gc_callback_raises)
            gc.collect()
        for _ in range(500):  # 5 s: the interrupt is sent again after 10 ms
            time.sleep(0.01)
    assert "KeyboardInterrupt" not in capsys.readouterr().err
