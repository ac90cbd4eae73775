import json

import pytest

from conftest import TINY
from scale_repro.config import EvalConfig, load_config
from scale_repro.data.records import Example
from scale_repro.method.rewards import accuracy_reward
from scale_repro.stages.evaluate import EvalError, metrics_from_samples, model_family, run_eval, score_samples


@pytest.mark.slow
@pytest.mark.parametrize("model", TINY)
@pytest.mark.parametrize("task", ["synthetic-scienceqa", "synthetic-iconqa"])
def test_eval_on_each_tiny_architecture(tmp_path, tiny_paths, synth_dir, model, task):
    config = load_config(
        EvalConfig,
        None,
        [
            f"model={model}",
            f"task={task}",
            f"data={synth_dir}",
            f"output_dir={tmp_path / 'eval'}",
            "max_new_tokens=8",
            "limit=4",
        ],
    )
    out = run_eval(config)
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert metrics["n"] == len(rows) == 4
    assert metrics["accuracy"] == sum(r["correct"] for r in rows) / 4
    assert metrics["invalid_rate"] == sum(not r["valid"] for r in rows) / 4
    assert metrics["mean_completion_tokens"] == sum(r["completion_tokens"] for r in rows) / 4
    # Counted on the decoded text: a random model's stray bytes re-tokenise longer, so no upper bound here.
    assert all(isinstance(r["completion_tokens"], int) and r["completion_tokens"] >= 0 for r in rows)
    # The evaluator and the GRPO accuracy reward agree on the same completions.
    rewards = accuracy_reward(
        [r["completion"] for r in rows],
        answer=[r["target"] for r in rows],
        choices=[r["choices"] for r in rows],
    )
    assert sum(rewards) / 4 == metrics["accuracy"]
    results = json.loads((out / "lmms_eval_results.json").read_text())
    assert any(name.startswith("scale_synthetic") for name in results["results"])


@pytest.mark.slow
def test_interrupted_eval_reuses_cached_responses(tmp_path, tiny_paths, synth_dir):
    from scale_repro.runs.rundir import atomic_write_json, read_manifest

    args = [
        "model=tiny-gemma3",
        "task=synthetic-scienceqa",
        f"data={synth_dir}",
        f"output_dir={tmp_path / 'e'}",
        "max_new_tokens=4",
        "limit=3",
    ]
    run_eval(load_config(EvalConfig, None, args))
    caches = list((tmp_path / "e" / "cache").iterdir())
    assert len(caches) == 1 and len(caches[0].read_text().splitlines()) == 3
    assert (read_manifest(tmp_path / "e")["generated"], read_manifest(tmp_path / "e")["reused"]) == (3, 0)
    first = (tmp_path / "e" / "samples.jsonl").read_text()
    # A kill leaves the manifest "running" and no metrics: the same command runs again, from the cache.
    manifest = read_manifest(tmp_path / "e")
    atomic_write_json(tmp_path / "e" / "manifest.json", {**manifest, "status": "running"})
    (tmp_path / "e" / "metrics.json").unlink()
    run_eval(load_config(EvalConfig, None, args))
    assert list((tmp_path / "e" / "cache").iterdir()) == caches
    assert (tmp_path / "e" / "samples.jsonl").read_text() == first
    manifest = read_manifest(tmp_path / "e")
    assert manifest["status"] == "finished" and (manifest["generated"], manifest["reused"]) == (0, 3)


def test_hand_written_completions_score_exactly():
    examples = [
        Example("q0", [], "?", "B", choices=["red", "blue"]),
        Example("q1", [], "?", "B", choices=["red", "blue"]),
        Example("q2", [], "?", "12"),
        Example("q3", [], "?", "12"),
        Example("q4", [], "?", "A", choices=["yes", "no"]),
    ]
    completions = [
        "<think>it is blue</think><answer>blue</answer>",  # choice text: correct, valid
        "<think>hmm</think><answer>Final Answer: (B).</answer>",  # correct, valid
        "<think>count",  # invalid and wrong
        "<answer>12.0</answer>",  # correct but invalid (no </think>)
        "<think>x</think><answer>A</answer><answer>B</answer>",  # two blocks: wrong, invalid
    ]
    samples = [
        {"doc_id": i, "target": e.answer, "resps": [[c]], "token_counts": [{"output_tokens": 10 * (i + 1)}]}
        for i, (e, c) in enumerate(zip(examples, completions, strict=True))
    ]
    rows = score_samples(samples, examples)
    assert [r["correct"] for r in rows] == [True, True, False, False, False]
    assert [r["valid"] for r in rows] == [True, True, False, False, False]
    # An answer the rules could read as the kind asked for: none in the three invalid completions.
    assert [r["readable"] for r in rows] == [True, True, False, False, False]
    assert metrics_from_samples(rows) == {
        "n": 5,
        "accuracy": 0.4,
        "invalid_rate": 0.6,
        "unreadable_rate": 0.6,
        "inconsistent_rate": 0.0,
        "mean_completion_tokens": 30.0,
        "stock_accuracy": None,  # no test set schema given: lmms-eval's stock rule not applied
    }


def test_answers_that_contradict_their_own_trace_are_counted():
    examples = [Example(f"q{i}", [], "?", "B", choices=["red", "blue"]) for i in range(3)] + [
        Example("q3", [], "?", "2"),
        Example("q4", [], "?", "2"),
    ]
    completions = [
        "<think>So the answer is blue, which is option B.</think><answer>B</answer>",  # agrees
        "<think>So the answer is red, which is option A.</think><answer>B</answer>",  # contradicts
        "<think>The top left cell is blue and the</think><answer>B</answer>",  # no conclusion stated
        "<think>That is 2 in total. So the answer is 3.</think><answer>2</answer>",  # contradicts
        "<think>So the answer is 2.</think><answer>2.0</answer>",  # agrees (same number)
    ]
    samples = [
        {"doc_id": i, "target": e.answer, "resps": [[c]]}
        for i, (e, c) in enumerate(zip(examples, completions, strict=True))
    ]
    rows = score_samples(samples, examples)
    assert [r["agrees_with_trace"] for r in rows] == [True, False, None, False, True]
    assert metrics_from_samples(rows)["inconsistent_rate"] == 0.4


def test_model_without_processor_is_a_clear_error(tmp_path, tiny_paths):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_paths["tiny-gemma3"], bare)
    for name in ("processor_config.json", "preprocessor_config.json"):
        (bare / name).unlink(missing_ok=True)
    with pytest.raises(EvalError, match="no processor"):
        model_family(str(bare))


def test_unknown_task_and_missing_columns(tmp_path, synth_dir):
    from scale_repro.data.sources import load_test_examples
    from scale_repro.data.validate import DataError

    with pytest.raises(EvalError, match="unknown task"):
        run_eval(load_config(EvalConfig, None, ["task=mmmu", f"output_dir={tmp_path / 'x'}"]))
    import datasets

    broken = datasets.load_from_disk(str(synth_dir / "scienceqa_test"))
    broken["test"].remove_columns(["choices"]).save_to_disk(str(tmp_path / "broken"))
    with pytest.raises(DataError, match="missing column"):
        load_test_examples("synthetic-scienceqa", str(tmp_path / "broken"))


def _eval_config(tmp_path, synth_dir, *extra):
    return load_config(
        EvalConfig,
        None,
        [
            "model=tiny-llava-next",
            "task=synthetic-scienceqa",
            f"data={synth_dir}",
            f"output_dir={tmp_path / 'eval'}",
            "max_new_tokens=4",
            "limit=2",
            *extra,
        ],
    )


@pytest.mark.slow
def test_a_generation_error_swallowed_by_lmms_eval_fails_the_evaluation(
    tmp_path, tiny_paths, synth_dir, monkeypatch
):
    from transformers import LlavaNextForConditionalGeneration

    from scale_repro.runs.rundir import read_manifest

    def broken(self, *args, **kwargs):
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(LlavaNextForConditionalGeneration, "generate", broken)
    with pytest.raises(
        EvalError, match=r"lmms-eval logged 2 error\(s\) while evaluating \(first: Error CUDA error"
    ):
        run_eval(_eval_config(tmp_path, synth_dir))
    assert read_manifest(tmp_path / "eval")["status"] == "failed"
    assert not list((tmp_path / "eval" / "cache").glob("*.jsonl")) or all(
        not p.read_text() for p in (tmp_path / "eval" / "cache").glob("*.jsonl")
    )  # nothing cached for a rerun to reuse


@pytest.mark.slow
def test_empty_completions_stop_the_evaluation_unless_allowed(tmp_path, tiny_paths, synth_dir, monkeypatch):
    from transformers import LlavaNextForConditionalGeneration

    def nothing_new(self, input_ids=None, **kwargs):
        return input_ids  # no new tokens: an empty completion, no error logged

    monkeypatch.setattr(LlavaNextForConditionalGeneration, "generate", nothing_new)
    with pytest.raises(EvalError, match=r"^2 of 2 completions are empty \(first: question "):
        run_eval(_eval_config(tmp_path, synth_dir))
    out = run_eval(
        _eval_config(tmp_path, synth_dir, "allow_empty_completions=true", f"output_dir={tmp_path / 'ok'}")
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["empty_completions"], metrics["invalid_rate"]) == (2, 1.0)


def test_vllm_eval_sees_what_the_transformers_path_sees(tmp_path, tiny_paths):
    from scale_repro.stages.evaluate import check_vllm_ready, effective_settings, lmms_model

    qwen = load_config(EvalConfig, None, ["model=tiny-qwen2.5-vl", "use_vllm=true", "max_new_tokens=64"])
    qwen = effective_settings(qwen, "qwen2_5_vl")  # vLLM takes the pending requests 256 at a time
    name, args = lmms_model(str(tiny_paths["tiny-qwen2.5-vl"]), "qwen2_5_vl", qwen)
    assert name == "vllm"
    assert args == (
        f"model={tiny_paths['tiny-qwen2.5-vl']},max_new_tokens=64,trust_remote_code=False,batch_size=256,"
        "min_image_pixels=4096,max_pixels=4096"
    )
    # Gemma-3: lmms-eval's vLLM class sends user turns only; the system turn goes in through the
    # chat template, so vLLM renders what the transformers path (system turn + user turn) renders.
    gemma = load_config(
        EvalConfig, None, ["model=tiny-gemma3", "use_vllm=true", 'system_prompt=Be brief, "exact".']
    )
    name, args = lmms_model(str(tiny_paths["tiny-gemma3"]), "gemma3", gemma, tmp_path)
    template = tmp_path / "chat_template_with_system.jinja"
    assert args.endswith(f",chat_template={template}")
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_paths["tiny-gemma3"])
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many circles?"}]}
    system = {"role": "system", "content": [{"type": "text", "text": 'Be brief, "exact".'}]}
    via_vllm = processor.apply_chat_template(
        [user], chat_template=template.read_text(), tokenize=False, add_generation_prompt=True
    )
    via_transformers = processor.apply_chat_template(
        [system, user], tokenize=False, add_generation_prompt=True
    )
    assert via_vllm == via_transformers
    assert 'Be brief, "exact".' in via_vllm
    with pytest.raises(EvalError, match="--use-vllm needs CUDA and the vllm package"):
        check_vllm_ready()  # this suite runs on CPU


def test_llava_batch_size_is_refused_before_the_model_loads(tmp_path, tiny_paths):
    from scale_repro.stages.evaluate import check_batch_size

    config = load_config(
        EvalConfig,
        None,
        [
            "model=tiny-llava-next",
            "task=synthetic-iconqa",
            "batch_size=4",
            f"output_dir={tmp_path / 'eval'}",
            f"data={tmp_path / 'none'}",
        ],
    )
    with pytest.raises(
        EvalError, match=r"^batch_size 4: lmms-eval's llava_hf model generates one request at a time"
    ):
        run_eval(config)
    assert not (tmp_path / "eval" / "manifest.json").exists()
    check_batch_size("qwen2_5_vl", config)  # batches: no error
    check_batch_size(
        "llava_next", load_config(EvalConfig, None, ["model=x", "batch_size=4", "use_vllm=true"])
    )


def test_think_boxed_format_is_asked_and_scored_as_trained(tmp_path):
    from scale_repro.method.formats import CURRICULUM_INSTRUCTION
    from scale_repro.runs.rundir import Manifest
    from scale_repro.stages.evaluate import write_task_yaml
    from scale_repro.stages.lmms_tasks import utils as hooks

    examples = [Example("q0", [], "?", "B", choices=["red", "blue"]), Example("q1", [], "?", "12")]
    completions = ["<think>it is blue</think> \\boxed{B}", "<think>x</think><answer>12</answer>"]
    samples = [
        {"doc_id": i, "target": e.answer, "resps": [[c]]}
        for i, (e, c) in enumerate(zip(examples, completions, strict=True))
    ]
    rows = score_samples(samples, examples, answer_format="think_boxed")
    assert [(r["correct"], r["valid"]) for r in rows] == [(True, True), (False, False)]
    assert [r["valid"] for r in score_samples(samples, examples)] == [False, True]
    # lmms-eval's hooks: the boxed variants ask with the curriculum's instruction and parse \boxed{}.
    doc = {"question": "Which colour?", "choices": ["red", "blue"], "hint": "", "answer": 1}
    assert hooks.scienceqa_doc_to_text_boxed(doc).endswith(CURRICULUM_INSTRUCTION)
    assert hooks.scienceqa_process_results_boxed(doc, ["<think>b</think>\\boxed{B}"]) == {
        "accuracy": 1.0,
        "invalid_rate": 0.0,
    }
    assert hooks.scienceqa_process_results(doc, ["<think>b</think>\\boxed{B}"])["invalid_rate"] == 1.0
    boxed = EvalConfig(
        task="synthetic-scienceqa", answer_format="think_boxed", output_dir=str(tmp_path / "e")
    )
    name, tasks_dir = write_task_yaml(boxed, tmp_path / "e")
    assert (
        (tasks_dir / f"{name}.yaml")
        .read_text()
        .startswith(f"include: {hooks.__file__.rsplit('/', 1)[0]}/scienceqa_img_cot_boxed.yaml")
    )
    # A GRPO run trained in one format is not evaluated in the other, before anything loads.
    run = tmp_path / "grpo-run"
    Manifest(run, "grpo", {"answer_format": "think_boxed"}).finish()
    tags = EvalConfig(
        model=str(run), task="synthetic-scienceqa", data=str(tmp_path), output_dir=str(tmp_path / "t")
    )
    with pytest.raises(
        EvalError,
        match="trained to answer in the 'think_boxed' format; .* \\(--set answer_format=think_boxed\\)",
    ):
        run_eval(tags)
    assert not (tmp_path / "t").exists()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-qwen2.5-vl", "tiny-gemma3"])
def test_batched_evaluation_answers_what_one_at_a_time_answers(tmp_path, tiny_paths, model):
    """Eight requests padded into one batch (left padding) decode greedily to the completions
    one-at-a-time decoding gives. On a trained model: a random-init one has near-tied logits,
    which any change of batch shape (a different summation order) can flip."""
    from scale_repro.config import SFTConfig
    from scale_repro.data.synth import SynthConfig, write_synthetic
    from scale_repro.stages.sft import run_sft

    data = write_synthetic(tmp_path / "data", SynthConfig(seed=0, n_train=64, n_test=16))
    sft = load_config(
        SFTConfig,
        None,
        ["max_steps=40", "per_device_train_batch_size=8", "learning_rate=0.003", "save_steps=1000"],
        model=model,
        output_dir=str(tmp_path / "sft"),
        **{"data.spec": str(data)},
    )
    trained = run_sft(sft)
    completions = {}
    for batch in (1, 8):
        config = load_config(
            EvalConfig,
            None,
            [f"batch_size={batch}", "max_new_tokens=48", "limit=16"],
            model=str(trained),
            task="synthetic-scienceqa",
            data=str(data),
            output_dir=str(tmp_path / f"eval-{batch}"),
        )
        out = run_eval(config)
        manifest = json.loads((out / "manifest.json").read_text())
        assert (manifest["batch_size"], manifest["chunk"]) == (batch, 4 * batch)
        completions[batch] = [
            json.loads(line)["completion"] for line in (out / "samples.jsonl").read_text().splitlines()
        ]
    assert len(completions[1]) == 16 and completions[8] == completions[1]
    assert len(set(completions[1])) > 1  # not one answer repeated: the comparison says something


def test_unset_batch_size_and_vllm_are_decided_per_model_and_machine():
    from scale_repro.stages.evaluate import HF_BATCH, effective_settings

    config = load_config(EvalConfig, None, [])
    assert (config.batch_size, config.use_vllm) == (None, None)  # the run's identity: left open
    assert (
        effective_settings(config, "qwen2_5_vl").batch_size,
        effective_settings(config, "qwen2_5_vl").use_vllm,
    ) == (HF_BATCH, False)
    assert (
        effective_settings(config, "llava_next").batch_size == 1
    )  # lmms-eval's llava_hf takes one at a time
    explicit = load_config(EvalConfig, None, ["batch_size=4", "use_vllm=false"])
    assert effective_settings(explicit, "gemma3").batch_size == 4


def test_evaluation_sees_images_at_the_training_budget(tiny_paths):
    """A paper model named by its short name is evaluated at its model recipe's image budget (the
    one its trained runs save); a set budget replaces the checkpoint's; a model without a pixel
    budget refuses one before it loads."""
    from scale_repro.stages.evaluate import lmms_model

    base = load_config(EvalConfig, None, ["model=qwen3-vl-8b", "task=pope"])
    assert (base.min_pixels, base.max_pixels) == (262144, 4194304)  # configs/models/qwen3-vl-8b.yaml
    qwen = load_config(
        EvalConfig, None, ["model=tiny-qwen2.5-vl", "use_vllm=false", "min_pixels=1024", "max_pixels=8192"]
    )
    _, args = lmms_model(str(tiny_paths["tiny-qwen2.5-vl"]), "qwen2_5_vl", qwen)
    assert args.endswith(",min_pixels=1024,max_pixels=8192")
    _, own = lmms_model(
        str(tiny_paths["tiny-qwen2.5-vl"]), "qwen2_5_vl", load_config(EvalConfig, None, ["use_vllm=false"])
    )
    assert own.endswith(",min_pixels=4096,max_pixels=4096")  # the tiny checkpoint's own
