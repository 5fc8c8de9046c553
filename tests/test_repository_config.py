"""The repository's config keys: download deadline, minimum rate, manifest max age."""

from __future__ import annotations

from pathlib import Path

import pytest

from atomicplug.config import Config
from atomicplug.errors import ConfigError
from atomicplug.repository.fetcher import Timeouts


def test_defaults_are_a_kib_per_second_over_thirty_seconds_and_a_minute_of_manifest(tmp_path: Path) -> None:
    config = Config.for_directory(tmp_path)
    assert (config.download_timeout, config.download_min_rate, config.download_rate_window) == (300, 1024, 30)
    assert config.manifest_max_age == 60
    assert Timeouts.from_config(config) == Timeouts(deadline=300, min_rate=1024, rate_window=30)


def test_keys_reach_the_fetcher(tmp_path: Path) -> None:
    config = Config.for_directory(tmp_path, download_timeout=12.5, download_min_rate=0, download_rate_window=5, manifest_max_age=0)
    assert Timeouts.from_config(config) == Timeouts(deadline=12.5, min_rate=0, rate_window=5)
    assert config.manifest_max_age == 0


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("download_timeout", 0, "positive number"),
        ("download_timeout", -1, "positive number"),
        ("download_min_rate", -1, "number >= 0"),
        ("download_min_rate", "fast", "number >= 0"),
        ("download_rate_window", 0, "positive number"),
        ("manifest_max_age", -5, "number >= 0"),
        ("manifest_max_age", True, "number >= 0"),
        ("manifest_max_age", float("inf"), "number >= 0"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path: Path, key: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}' must be a {expected}"):
        Config.for_directory(tmp_path, **{key: value})


def test_template_documents_the_keys(tmp_path: Path) -> None:
    from atomicplug.config import CONFIG_TEMPLATE

    for key in ("download_timeout", "download_min_rate", "download_rate_window", "manifest_max_age"):
        line = next(line for line in CONFIG_TEMPLATE.splitlines() if line.startswith(f"# {key} = "))
        path = tmp_path / f"{key}.toml"
        path.write_text(line.removeprefix("# ") + "\n")
        assert getattr(Config.load(path), key) == getattr(Config.for_directory(tmp_path), key)  # the default, as written


@pytest.mark.parametrize("value", ["not a url", "127.0.0.1:8002", "ftp://example.com/repo", "file:///srv/repo", "http://", "https://:8002", "http://h:99999"])
def test_a_repository_other_than_an_http_url_is_refused_naming_the_key(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="^config 'repository' must be an http:// or https:// URL") as refused:
        Config.for_directory(tmp_path, repository=value)
    assert f"(got {value!r})" in str(refused.value)


@pytest.mark.parametrize("value", ["http://127.0.0.1:8002", "https://cdn.example.com/plugins/", "http://[::1]:8002"])
def test_http_and_https_repositories_are_accepted(tmp_path: Path, value: str) -> None:
    assert Config.for_directory(tmp_path, repository=value).repository == value
