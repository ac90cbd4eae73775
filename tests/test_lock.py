"""The installed stack is one every package declares it supports, but for the one override the
lock documents (pyproject.toml, [tool.uv] override-dependencies), and that override works."""

from importlib import metadata

from packaging.requirements import Requirement

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
