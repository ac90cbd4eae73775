"""scripts/gpu_check.sh in its CPU mode, so the script a lent GPU runs does not rot: every step
passes, every stage of the gpu-check experiment finishes through the accelerate launcher, and
the one JSON holds their figures and the bench's."""

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_passes_in_its_cpu_mode(tmp_path, tiny_paths):
    out = tmp_path / "check"
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == f"gpu check passed: {out / 'gpu_check.json'}"
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["passed"] is True and result["device"] == "cpu"
    assert [s["step"] for s in result["steps"]] == ["imports", "build", "experiment", "bench"]
    stages = result["stages"]
    assert sorted(s["stage"] for s in stages.values()) == ["eval", "eval", "grpo", "sft"]
    assert all(s["status"] == "finished" for s in stages.values())
    sft = next(s for s in stages.values() if s["stage"] == "sft")
    grpo = next(s for s in stages.values() if s["stage"] == "grpo")
    assert (sft["global_step"], grpo["global_step"]) == (6, 4)
    assert grpo["rollout_tokens_per_s"] > 0 and grpo["use_vllm"] is False
    evaluations = [s for s in stages.values() if s["stage"] == "eval"]
    assert [(e["questions"], e["batch_size"]) for e in evaluations] == [(64, 16), (64, 16)]
    assert result["bench"]["model"] == "tiny-qwen2.5-vl" and result["bench"]["sft_tokens_per_s"] > 0
