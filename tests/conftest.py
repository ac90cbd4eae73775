import os

# Offline by construction: nothing in the suite may reach the model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

TINY = ("tiny-qwen2.5-vl", "tiny-gemma3", "tiny-llava-next", "tiny-qwen3-vl", "tiny-internvl")


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Tiny models are built once per session into a private cache."""
    os.environ["SCALE_CACHE"] = str(tmp_path_factory.mktemp("scale-cache"))
    yield


@pytest.fixture(scope="session")
def tiny_paths(isolated_cache):
    from scale_repro.models.registry import tiny_model_path

    return {name: tiny_model_path(name) for name in TINY}


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    from scale_repro.data.synth import SynthConfig, write_synthetic

    return write_synthetic(
        tmp_path_factory.mktemp("synth") / "data", SynthConfig(seed=0, n_train=24, n_test=9)
    )


def interrupt_at(step: int):
    """A trainer callback that stops training in-process, as a Ctrl-C would, at the end of ``step``
    (tests/test_resume.py kills real processes; this is the quick variant)."""
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise KeyboardInterrupt("simulated kill")

    return Interrupt()
