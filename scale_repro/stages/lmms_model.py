"""An lmms-eval model wrapper whose generations survive an interrupted evaluation.

lmms-eval's own ``ResponseCache`` cannot do this job: it hands the model every request in
one call and stores the responses only when that call returns (a kill loses them all), and
it keys a response by the request's generation settings looked up before generation and
stored after it, while its model classes change those settings in place (``llava_hf`` pops
``until`` and adds ``top_p``/``num_beams``; the others add ``image_sizes``), so the keys
never match (0 hits on a complete cache).

:class:`ResumableModel` delegates to the lmms-eval model for everything, gives it a copy of
each request's settings, generates in chunks of the batch size, and appends each chunk's
responses to a JSON-lines store (flushed and synced) before the next; on a rerun the
stored responses are returned without generating. It counts what it generated and reused,
so the manifest (and a test) can tell reuse from regeneration.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from lmms_eval import models
from lmms_eval.api.instance import GenerationResult
from lmms_eval.api.model import lmms

from scale_repro.runs.faults import kill_point


def request_key(request) -> str:
    """A generation request's identity: task, document, prompt and generation settings."""
    context = next((a for a in request.args if isinstance(a, str)), "")
    settings = next((a for a in request.args if isinstance(a, dict)), {})
    payload = [request.task_name, str(request.doc_id), request.idx, context, settings]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def read_store(path: Path) -> dict[str, str]:
    """Stored responses; a line cut short by a kill is ignored."""
    store: dict[str, str] = {}
    if not path.is_file():
        return store
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        store[entry["key"]] = entry["response"]
    return store


class ResumableModel(lmms):
    """Delegates to an lmms-eval model; generations are stored as they are made."""

    def __init__(
        self, inner: lmms, store: Path, chunk: int
    ):  # lmms.__init__ not called: state lives in inner
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_store_path", Path(store))
        object.__setattr__(self, "_chunk", max(1, chunk))
        object.__setattr__(self, "generated", 0)
        object.__setattr__(self, "reused", 0)

    @classmethod
    def create(
        cls, model_name: str, model_args: str, batch_size: int, store: Path, chunk: int | None = None
    ) -> ResumableModel:
        """``chunk`` requests go to the model at a time (it batches them by ``batch_size``), and
        are stored before the next chunk."""
        inner = models.get_model(model_name).create_from_arg_string(model_args, {"batch_size": batch_size})
        return cls(inner, store, chunk or batch_size)

    @property
    def is_simple(self) -> bool:  # type: ignore[override]
        return self._inner.is_simple

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_inner"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        # lmms-eval sets task_dict (and the like) on the model it evaluates; the inner model reads them.
        setattr(self._inner, name, value)

    def _count(self, name: str, n: int) -> None:
        object.__setattr__(self, name, getattr(self, name) + n)

    @staticmethod
    def _isolated(request):
        clone = copy.copy(request)
        clone.arguments = tuple(dict(a) if isinstance(a, dict) else a for a in request.args)
        return clone

    def _append(self, entries: list[dict[str, str]]) -> None:
        self._store_path.parent.mkdir(parents=True, exist_ok=True)
        with self._store_path.open("a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(e) + "\n" for e in entries))
            handle.flush()
            os.fsync(handle.fileno())

    def generate_until(self, requests) -> list:
        keys = [request_key(r) for r in requests]
        stored = read_store(self._store_path)
        results: list[Any] = [stored.get(k) for k in keys]
        missing = [i for i, r in enumerate(results) if r is None]
        self._count("reused", len(requests) - len(missing))
        for start in range(0, len(missing), self._chunk):
            chunk = missing[start : start + self._chunk]
            kill_point("generation", self.generated)
            outputs = self._inner.generate_until([self._isolated(requests[i]) for i in chunk])
            self._count("generated", len(chunk))
            entries = []
            for i, output in zip(chunk, outputs, strict=True):
                results[i] = output
                text = output.text if isinstance(output, GenerationResult) else output
                # lmms-eval's model classes answer "" when generation fails: never keep one, so a
                # rerun generates it again rather than reusing a failure.
                if text and text.strip():
                    entries.append({"key": keys[i], "doc_id": str(requests[i].doc_id), "response": text})
            self._append(entries)
        return results

    def generate_until_multi_round(self, requests) -> list:
        self._count("generated", len(requests))
        return self._inner.generate_until_multi_round([self._isolated(r) for r in requests])

    def loglikelihood(self, requests):
        return self._inner.loglikelihood(requests)
