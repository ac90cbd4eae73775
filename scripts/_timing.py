"""Per-step wall time, shared by the benchmark scripts."""

import time

from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self.started = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.started)
