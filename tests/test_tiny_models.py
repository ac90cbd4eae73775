import json

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from conftest import TINY

EXPECTED_CLASS = {
    "tiny-qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration",
    "tiny-gemma3": "Gemma3ForConditionalGeneration",
    "tiny-llava-next": "LlavaNextForConditionalGeneration",
    "tiny-qwen3-vl": "Qwen3VLForConditionalGeneration",
    "tiny-internvl": "InternVLForConditionalGeneration",
}


@pytest.mark.parametrize("name", TINY)
def test_tiny_model_reloads_runs_and_generates(tiny_paths, name):
    path = tiny_paths[name]
    assert (path / "model.safetensors").is_file()
    info = json.loads((path / "scale_tiny.json").read_text())
    assert info["parameters"] < 1_000_000
    model = AutoModelForImageTextToText.from_pretrained(path, use_safetensors=True)
    processor = AutoProcessor.from_pretrained(path)
    assert type(model).__name__ == EXPECTED_CLASS[name]

    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many red shapes?"}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(images=[Image.new("RGB", (64, 64), (220, 40, 40))], text=[prompt], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape
    assert torch.isfinite(logits).all()
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4


def test_tiny_build_is_deterministic_for_a_seed(tmp_path):
    from safetensors.torch import load_file

    from scale_repro.models.tiny import build_tiny

    a = load_file(build_tiny("tiny-gemma3", tmp_path / "a", seed=7) / "model.safetensors")
    b = load_file(build_tiny("tiny-gemma3", tmp_path / "b", seed=7) / "model.safetensors")
    c = load_file(build_tiny("tiny-gemma3", tmp_path / "c", seed=8) / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_wide_vocabulary_option(tmp_path):
    from transformers import AutoConfig

    from scale_repro.models.tiny import build_tiny

    path = build_tiny("tiny-gemma3", tmp_path / "wide", vocab_size=4096)
    assert AutoConfig.from_pretrained(path).text_config.vocab_size == 4096


def test_vendored_chat_templates_are_trls_copies_of_the_model_repos():
    from pathlib import Path

    import trl

    from scale_repro.models.tiny import CHAT_TEMPLATES

    trl_templates = Path(trl.__file__).parent / "chat_templates"
    for name in ("qwen2_5_vl", "gemma3", "llava_next", "qwen3_vl"):  # internvl.jinja: transformers' own
        assert (CHAT_TEMPLATES / f"{name}.jinja").read_bytes() == (
            trl_templates / f"{name}.jinja"
        ).read_bytes()


def test_real_geometry_models_render_with_the_real_templates():
    from transformers import AutoProcessor

    from scale_repro.models.registry import tiny_model_path
    from scale_repro.models.tiny import real_chat_template

    for name, family in [
        ("tiny-qwen2.5-vl-real", "qwen2_5_vl"),
        ("tiny-gemma3-real", "gemma3"),
        ("tiny-llava-next-real", "llava_next"),
        ("tiny-qwen3-vl-real", "qwen3_vl"),
        ("tiny-internvl-real", "internvl"),
    ]:
        processor = AutoProcessor.from_pretrained(tiny_model_path(name))
        assert processor.chat_template == real_chat_template(family)


@pytest.mark.parametrize(
    "name, parameters",
    [
        # Each hub repository's safetensors parameter count.
        ("qwen2.5-vl-3b-random", 3_754_622_976),  # Qwen/Qwen2.5-VL-3B-Instruct
        ("gemma-3-4b-random", 4_300_079_472),  # google/gemma-3-4b-it
        ("llava-v1.6-mistral-7b-random", 7_566_747_648),  # llava-hf/llava-v1.6-mistral-7b-hf
        # The curriculum's backbones, against their model cards' figures.
        ("qwen3-vl-8b-random", 8_767_123_696),  # 8.77B: vision 576.4M, language 8.19B
        ("qwen2.5-vl-7b-random", 8_292_166_656),  # 8.29B
        ("internvl3-8b-random", 7_944_373_760),  # 7.94B
        ("internvl3.5-8b-random", 8_528_318_464),  # 8.5B: vision 0.3B, language 8.2B
    ],
)
def test_random_paper_models_have_the_paper_models_exact_size(name, parameters):
    """The ``-random`` models (built on a GPU) at the vendored widths, counted on the meta device."""
    import torch

    from scale_repro.models.tiny import BUILDERS, TINY_MODELS, at_paper_widths, train_tokenizer

    spec = TINY_MODELS[name]
    tokenizer = train_tokenizer(spec.family)
    tiny, _ = BUILDERS[spec.family](tokenizer, 0, len(tokenizer), True)
    with torch.device("meta"):
        model = type(tiny)._from_config(at_paper_widths(tiny.config, spec.paper))
    assert sum(p.numel() for p in model.parameters()) == parameters


def test_a_random_paper_model_on_a_cpu_is_refused_in_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from scale_repro.cli import app

    monkeypatch.setenv("SCALE_CACHE", str(tmp_path))
    result = CliRunner().invoke(app, ["models", "build", "qwen2.5-vl-3b-random"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "error: qwen2.5-vl-3b-random is Qwen/Qwen2.5-VL-3B-Instruct at full size, random-init, built on a "
        "GPU: no CUDA here; on a CPU use a tiny model (scale models list)"
    )
