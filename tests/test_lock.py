"""The installed stack is one every package declares it supports, but for the one override the
lock documents (pyproject.toml, [tool.uv] override-dependencies), and that override works; and
the whole lock, the GPU extra included, is one its packages declare they support."""

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
# What a GPU machine adds (make setup-gpu) that this one does not install, with its declared needs.
NOT_INSTALLED_HERE = {"vllm": REPO / "tests" / "fixtures" / "lock" / "vllm-0.31.0.requires"}
INTEGRATIONS = {"trl"}
LINUX = {
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "python_version": "3.11",
}

# (package, requirement it declares that the lock overrides): see pyproject.toml for why.
OVERRIDDEN = {("latex2sympy2", "antlr4-python3-runtime")}


def unmet_requirements() -> list[str]:
    installed = {dist.metadata["Name"].lower().replace("_", "-"): dist for dist in metadata.distributions()}
    unmet = []
    for name, dist in sorted(installed.items()):
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue  # an extra nobody asked for, or another platform
            wanted = requirement.name.lower().replace("_", "-")
            if (name, wanted) in OVERRIDDEN:
                continue
            have = installed.get(wanted)
            if have is None:
                unmet.append(f"{name} needs {requirement}, which is not installed")
            elif not requirement.specifier.contains(have.version, prereleases=True):
                unmet.append(f"{name} needs {requirement}, installed {have.version}")
    return unmet


def test_every_installed_package_gets_what_it_declares():
    assert unmet_requirements() == []


def test_the_one_override_holds_and_both_sides_parse_latex():
    """antlr 4.9.3: math-verify's parser and lmms-eval's latex2sympy2 both read LaTeX on it."""
    from latex2sympy2 import latex2sympy
    from math_verify import parse, verify

    assert metadata.version("antlr4-python3-runtime") == "4.9.3"
    assert str(latex2sympy(r"\frac{1}{2}")) == "1/2"
    assert verify(parse(r"$\frac{1}{2}$"), parse("$0.5$"))
    declared = [Requirement(r) for r in metadata.requires("latex2sympy2")]
    assert any(r.name == "antlr4-python3-runtime" and str(r.specifier) == "==4.7.2" for r in declared)


def locked() -> tuple[dict[str, str], dict[str, set[str]]]:
    """Every package's locked version, and the extras the lock turns on for each."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    versions = {p["name"]: p["version"] for p in lock["package"] if "version" in p}
    extras: dict[str, set[str]] = {}
    for package in lock["package"]:
        entries = [*package.get("dependencies", [])]
        entries += [e for group in package.get("optional-dependencies", {}).values() for e in group]
        for entry in entries:
            extras.setdefault(entry["name"], set()).update(entry.get("extra", []))
    return versions, extras


def metadata_extras(name: str) -> list[str]:
    try:
        return metadata.metadata(name).get_all("Provides-Extra") or []
    except metadata.PackageNotFoundError:
        return []


def unmet_in_lock() -> list[str]:
    """Each locked package's declared requirements (those of the extras the lock turns on too)
    against the locked versions of what they name."""
    versions, extras = locked()
    unmet = []
    for name, version in sorted(versions.items()):
        if name in NOT_INSTALLED_HERE:
            lines = NOT_INSTALLED_HERE[name].read_text().splitlines()
            declared = [line for line in lines if line.strip() and not line.startswith("#")]
        else:
            try:
                declared = metadata.requires(name) or []
            except metadata.PackageNotFoundError:
                continue  # another platform's package, or a GPU-only one without vendored needs
        for text in declared:
            requirement = Requirement(text)
            wanted = requirement.name.lower().replace("_", "-")
            if (name, wanted) in OVERRIDDEN or wanted not in versions:
                continue
            # The extras the lock turns on; for the trainers' library, also each extra named after a
            # package the lock holds (TRL's vllm, deepspeed, peft extras: the versions its
            # integrations support, which hold whenever we use them, asked for or not).
            integrations = set(metadata_extras(name)) & set(versions) if name in INTEGRATIONS else set()
            active = [""] + sorted(extras.get(name, set()) | integrations)
            if requirement.marker is not None and not any(
                requirement.marker.evaluate({**LINUX, "extra": extra}) for extra in active
            ):
                continue
            if not requirement.specifier.contains(versions[wanted], prereleases=True):
                unmet.append(f"{name} {version} needs {requirement}, locked {versions[wanted]}")
    return unmet


def test_the_whole_lock_with_the_gpu_extra_is_one_its_packages_support():
    """TRL 1.16's vllm extra says vllm<=0.31.0, and vLLM 0.31 says transformers<5.18: a lock of
    vLLM 0.32 or transformers 5.19 fails here."""
    versions, extras = locked()
    assert "vllm" in extras["trl"]  # the GPU extra asks for TRL's own vllm extra
    assert unmet_in_lock() == []
