#!/usr/bin/env bash
# Wheels for a GPU machine with no network and its own torch and transformers (the lent H200):
# TRL, PEFT, accelerate, lmms-eval, DeepSpeed without compiled ops (DS_BUILD_OPS=0, built here from
# its sdist), this package, and every pure-Python package of the lock they may need, at the lock's
# versions, into ./wheels (git-ignored; carried to the device, 64 MiB at most). Compiled packages
# (torch, numpy, pandas, ...) are expected there; the GPU check's first step names any that is not.
# Pure-Python wheels over 3 MiB that no import of the check needs (pycocoevalcap's 100 MiB of COCO
# tools, say) are left out, so scripts/gpu_check.sh installs the wheels without resolving.
#   scripts/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf wheels && mkdir wheels
UV=${UV:-uv}
command -v "$UV" >/dev/null || UV="python3 -m uv"  # as the Makefile finds it
pip=($UV tool run --from pip pip)
$UV export --frozen --no-hashes --no-emit-project --no-header --no-annotate \
  | grep -E '^[A-Za-z0-9_.-]+==' | sed 's/ ;.*//' > wheels/lock.txt
main='^(trl|peft|accelerate|lmms-eval|deepspeed)=='
skip='^(torch|torchvision|transformers|triton|vllm|xformers|flashinfer|nvidia-|cuda-)'
grep -E "$main" wheels/lock.txt | grep -v '^deepspeed' | xargs "${pip[@]}" download --quiet --no-deps -d wheels
deepspeed=$(grep '^deepspeed==' wheels/lock.txt)
"${pip[@]}" download --quiet --no-deps --no-binary :all: -d wheels/sdist "$deepspeed"
DS_BUILD_OPS=0 $UV build --quiet --wheel --no-build-isolation --python .venv/bin/python -o wheels wheels/sdist/*.tar.gz
rm -rf wheels/sdist
grep -Ev "$main|$skip" wheels/lock.txt | while read -r pin; do
  # No pure-Python wheel: compiled (expected on the GPU machine) or source only; named in the list.
  "${pip[@]}" download --quiet --no-deps --only-binary :all: --platform any --python-version 3.11 -d wheels "$pin" \
    >/dev/null 2>&1 || echo "$pin" >> wheels/not-included.txt
done
echo "not included (compiled or source only; the GPU machine must have them): $(wc -l < wheels/not-included.txt) pins, listed in wheels/not-included.txt"
for wheel in wheels/*.whl; do
  name=$(basename "$wheel" | cut -d- -f1 | tr _ - | tr A-Z a-z)
  if ! echo "$name==" | grep -qE "$main" && [ "$(du -m "$wheel" | cut -f1)" -gt 3 ]; then
    echo "left out (over 3 MiB, not imported by the check): $(basename "$wheel")"
    rm "$wheel"
  fi
done
$UV build --quiet --wheel -o wheels .
echo "wheels: $(ls wheels/*.whl | wc -l) files, $(du -sm wheels | cut -f1) MiB in ./wheels"
