"""backend.dependencies: present, missing and wrong-version distributions."""

from __future__ import annotations

import importlib.metadata

import pytest

from atomicplug.errors import DependencyError, MetadataError
from atomicplug.repository.pydeps import check_python_dependencies, unmet_python_dependencies


def test_present_distribution_passes() -> None:
    check_python_dependencies(["attrs>=1", "packaging"])


def test_missing_distribution_is_refused_with_pip_command() -> None:
    with pytest.raises(DependencyError) as info:
        check_python_dependencies(["attrs>=1", "surely-not-installed-dist-xyz>=1.0"])
    message = str(info.value)
    assert "surely-not-installed-dist-xyz>=1.0 (not installed)" in message
    assert "pip install 'surely-not-installed-dist-xyz>=1.0'" in message
    assert "attrs" not in message


def test_wrong_version_is_refused_naming_installed_version() -> None:
    installed = importlib.metadata.version("attrs")
    with pytest.raises(DependencyError) as info:
        check_python_dependencies(["attrs<1"])
    assert f"attrs<1 ({installed} installed)" in str(info.value)
    assert "pip install 'attrs<1'" in str(info.value)


def test_every_problem_is_listed_at_once() -> None:
    unmet = unmet_python_dependencies(["attrs<1", "nope-missing-dist-abc", "packaging"])
    assert [r.name for r, _ in unmet] == ["attrs", "nope-missing-dist-abc"]


def test_marker_false_here_is_skipped() -> None:
    check_python_dependencies(['nope-missing-dist-abc; python_version < "3"'])


def test_invalid_requirement_is_metadata_error() -> None:
    with pytest.raises(MetadataError):
        check_python_dependencies(["not a requirement !!"])
