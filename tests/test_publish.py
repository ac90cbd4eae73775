"""Generated folders (data, tiny models, exports) appear whole or not at all, and two
processes asking for the same one never share a staging folder or write it twice."""

import json
import subprocess
import sys
import textwrap

import pytest

from scale_repro.runs.rundir import publishing


def test_a_published_folder_replaces_the_old_one_whole(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with publishing(out) as staging:
        assert staging.parent == tmp_path and staging != out
        (staging / "new.txt").write_text("new")
        assert (out / "old.txt").exists()  # readers still see the old folder
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".data.")] == [".data.publish.lock"]


def test_a_failed_write_leaves_the_old_folder_and_no_staging(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), publishing(out) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("disk full")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert not list(tmp_path.glob(".data.partial-*"))


def test_staging_left_by_a_killed_process_is_cleaned_up(tmp_path):
    import platform

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".data.partial-{platform.node()}-{dead.stdout.strip()}"
    stale.mkdir()
    with publishing(tmp_path / "data") as staging:
        (staging / "x").write_text("x")
    assert not stale.exists()


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from scale_repro.data.synth import SynthConfig, write_synthetic
    from scale_repro.runs.rundir import write_once

    def slow_write(folder, config):
        with open(sys.argv[2], "a") as log:
            log.write("write\\n")
        time.sleep(1.0)  # long enough for the other process to arrive meanwhile
        write_synthetic(folder, config)

    write_once(Path(sys.argv[1]), SynthConfig(n_train=8, n_test=4), slow_write, echo=lambda m: None)
    print("ok")
    """
)


def test_two_processes_asking_for_the_same_data_write_it_once(tmp_path):
    """The race two `scale reproduce` over one --out ran into: both write the generated data.
    Now the second waits for the first and reuses its folder."""
    folder, log = tmp_path / "synth", tmp_path / "writes.log"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(folder), str(log)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outputs == ["ok", "ok"]
    assert log.read_text() == "write\n"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["splits"]["train"] == 8
    assert not list(tmp_path.glob(".synth.partial-*"))
