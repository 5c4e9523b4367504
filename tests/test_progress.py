"""Long work shows progress in a log too: plain lines at a steady pace, no bar redraws."""

from __future__ import annotations

import os
import subprocess
import sys

from edgecut.progress import Tracker, duration


def test_a_log_gets_plain_lines_with_rate_and_time_left(capsys, monkeypatch):
    monkeypatch.setenv("EDGECUT_PROGRESS_SECONDS", "0")
    with Tracker("epoch 1/2", 4, per_step=8) as t:
        for _ in range(4):
            t.advance(info="loss 0.5")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("epoch 1/2  1/4  ") and "images/s" in lines[0] and "left" in lines[0]
    assert lines[-1].startswith("epoch 1/2  4/4  ") and lines[-1].endswith("loss 0.5")
    assert "\r" not in out and "\x1b" not in out


def test_the_pace_keeps_a_log_short(capsys, monkeypatch):
    monkeypatch.setenv("EDGECUT_PROGRESS_SECONDS", "3600")
    with Tracker("scoring", 1000) as t:
        for _ in range(1000):
            t.advance()
    assert capsys.readouterr().out == ""  # a short loop says nothing; a long one, one line every hour


def test_disabled_prints_nothing(capsys, monkeypatch):
    monkeypatch.setenv("EDGECUT_PROGRESS_SECONDS", "0")
    with Tracker("x", 3, enabled=False) as t:
        t.advance()
        t.note("kept")
    assert capsys.readouterr().out == ""


def test_durations_read_as_a_person_writes_them():
    assert [duration(s) for s in (5, 95, 4000)] == ["5s", "1m35s", "1h06m"]


def test_training_into_a_log_file_prints_steps_as_it_goes(synth_data, tmp_path):
    env = {**os.environ, "EDGECUT_PROGRESS_SECONDS": "0"}
    log = tmp_path / "train.log"
    with log.open("w") as f:  # stdout is a file, as under nohup or CI
        p = subprocess.run([sys.executable, "-m", "edgecut.cli", "train", "--data", str(synth_data), "--out",
                            str(tmp_path / "run"), "--arch", "unet", "--width", "4", "--size", "32", "--epochs", "1",
                            "--batch", "4", "--precision", "fp32"],
                           stdout=f, stderr=subprocess.PIPE, text=True, env=env, timeout=240)
    assert p.returncode == 0, p.stderr
    text = log.read_text()
    steps = [ln for ln in text.splitlines() if ln.startswith("epoch 1/1  ") and "images/s" in ln]
    assert steps, text
    assert "\r" not in text and "\x1b[" not in text
