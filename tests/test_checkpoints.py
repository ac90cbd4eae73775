import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from scale_repro.runs.checkpoints import ResumeError, load_full_state, newest_complete
from scale_repro.runs.rundir import Manifest, read_manifest


def fake_checkpoint(folder, step, files=("trainer_state.json", "model.safetensors", "optimizer.pt")):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    for name in files:
        if name == "trainer_state.json":
            (path / name).write_text(json.dumps({"global_step": step, "max_steps": 20}))
        elif name == "model.safetensors":
            save_file({"w": torch.zeros(2)}, str(path / name))
        else:
            (path / name).write_bytes(b"x")
    return path


def test_newest_complete_checkpoint_skips_half_written_ones(tmp_path):
    fake_checkpoint(tmp_path, 10)
    fake_checkpoint(tmp_path, 15)
    fake_checkpoint(
        tmp_path, 20, files=("model.safetensors", "optimizer.pt")
    )  # killed before trainer_state.json
    fake_checkpoint(tmp_path, 25, files=())  # killed right after mkdir
    newest, broken = newest_complete(tmp_path)
    assert newest.path.name == "checkpoint-15" and (newest.step, newest.max_steps) == (15, 20)
    assert [(b.path.name, b.problem) for b in broken] == [
        ("checkpoint-20", "no trainer_state.json (saving was interrupted)"),
        ("checkpoint-25", "no trainer_state.json (saving was interrupted)"),
    ]


def test_a_checkpoint_without_optimizer_or_with_cut_weights_is_not_resumed_from(tmp_path):
    fake_checkpoint(tmp_path, 5)
    fake_checkpoint(tmp_path, 10, files=("trainer_state.json", "model.safetensors"))
    cut = fake_checkpoint(tmp_path, 15)
    (cut / "model.safetensors").write_bytes((cut / "model.safetensors").read_bytes()[:20])
    newest, broken = newest_complete(tmp_path)
    assert newest.path.name == "checkpoint-5"
    assert broken[0].problem.startswith("no optimizer.pt: resuming would restart the optimizer")
    assert broken[1].problem == "model.safetensors is truncated or unreadable"


@pytest.mark.parametrize("model_name", ["tiny-llava-next", "tiny-gemma3", "tiny-qwen2.5-vl"])
def test_full_checkpoints_load_every_tensor_or_refuse(tmp_path, tiny_paths, model_name):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_paths[model_name])
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    model.save_pretrained(tmp_path / "ckpt")  # the layout the Trainer's checkpoints have
    fresh = AutoModelForImageTextToText.from_pretrained(tiny_paths[model_name])
    loaded = load_full_state(fresh, tmp_path / "ckpt")
    assert loaded == len(load_file(tmp_path / "ckpt" / "model.safetensors"))
    for (name, a), (_, b) in zip(fresh.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name

    state = load_file(tmp_path / "ckpt" / "model.safetensors")
    dropped = sorted(state)[0]
    del state[dropped]
    save_file(state, str(tmp_path / "ckpt" / "model.safetensors"))
    with pytest.raises(
        ResumeError, match=r"[12] tensors missing.*refusing to resume from partly loaded weights"
    ):
        load_full_state(fresh, tmp_path / "ckpt")


def test_wall_clock_sums_every_attempt_including_killed_ones(tmp_path):
    first = Manifest(tmp_path, "sft", {"a": 1})
    first.attempt["wall_clock_s"] = 0  # reset below by a heartbeat
    first._started -= 30.0
    first.heartbeat()  # the last beat before a kill
    second = Manifest(tmp_path, "sft", {"a": 1})
    second._started -= 12.0
    second.finish()
    manifest = read_manifest(tmp_path)
    assert [a["status"] for a in manifest["attempts"]] == ["interrupted", "finished"]
    assert manifest["attempts"][0]["wall_clock_s"] == pytest.approx(30.0, abs=0.5)
    assert manifest["wall_clock_s"] == pytest.approx(42.0, abs=1.0)
    other = Manifest(tmp_path, "sft", {"a": 2})  # another config starts its own count
    assert len(other.data["attempts"]) == 1
