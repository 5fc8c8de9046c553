"""atomicplug.metadata: the seed's metadata.json parses; one test per rule."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hostile_zips import valid_metadata
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from atomicplug.errors import MetadataError
from atomicplug.metadata import Metadata, NpmDependency, PluginRequirement


def refused(data: dict[str, Any], fragment: str) -> MetadataError:
    with pytest.raises(MetadataError) as info:
        Metadata.from_dict(data)
    assert fragment in str(info.value), str(info.value)
    assert info.value.exit_code == 3
    return info.value


# -- happy path -----------------------------------------------------------------------


def test_seed_metadata_parses_into_typed_fields() -> None:
    meta = Metadata.from_json_bytes(json.dumps(valid_metadata()).encode())
    assert meta.id == "ai_chatbot"
    assert meta.parsed_version == Version("1.0.0")
    assert meta.price == 0
    assert meta.requires == (PluginRequirement("email_core", SpecifierSet(">=1.2")),)
    assert meta.backend.dependencies == (Requirement("httpx>=0.24"),)
    assert meta.backend.models == ("ChatSession",)
    assert meta.frontend.dependencies == (NpmDependency("marked", "^9.0.0"),)
    assert meta.frontend.routes == ({"path": "/chatbot", "component": "ChatbotPage"},)
    assert meta.permissions == ("database.create_tables", "api.routes")


def test_to_dict_round_trips() -> None:
    meta = Metadata.from_dict(valid_metadata(homepage="https://example.com"))
    assert Metadata.from_dict(meta.to_dict()) == meta
    assert meta.to_dict()["homepage"] == "https://example.com"
    assert json.loads(json.dumps(meta.to_dict())) == meta.to_dict()


def test_optional_fields_get_defaults() -> None:
    meta = Metadata.from_dict({"id": "tiny", "name": "Tiny", "version": "0.1"})
    assert (meta.author, meta.description, meta.category, meta.price) == ("", "", "", None)
    assert meta.requires == () and meta.permissions == ()
    assert meta.backend.dependencies == () and meta.frontend.dependencies == ()


def test_null_optional_fields_get_defaults() -> None:
    meta = Metadata.from_dict(valid_metadata(author=None, requires=None, backend=None, price=None))
    assert meta.author == "" and meta.requires == () and meta.backend.routes == ()


def test_plugin_requirement_is_satisfied_by_versions_in_its_specifier() -> None:
    req = PluginRequirement.parse("email_core>=1.2,<2")
    assert req.is_satisfied_by("1.2") and req.is_satisfied_by(Version("1.9.9"))
    assert not req.is_satisfied_by("2.0") and not req.is_satisfied_by("1.1")
    assert PluginRequirement.parse("email_core").is_satisfied_by("0.1a1")
    assert str(req) in ("email_core<2,>=1.2", "email_core>=1.2,<2")


def test_frontend_dependencies_accept_a_list_of_npm_names() -> None:
    meta = Metadata.from_dict(valid_metadata(frontend={"dependencies": ["react", "@tanstack/query@^5", "vue@3.4.0"]}))
    assert meta.frontend.dependencies == (
        NpmDependency("react", "*"),
        NpmDependency("@tanstack/query", "^5"),
        NpmDependency("vue", "3.4.0"),
    )


def test_duplicate_permissions_collapse() -> None:
    assert Metadata.from_dict(valid_metadata(permissions=["api.routes", "api.routes"])).permissions == ("api.routes",)


# -- one rule each ------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["id", "name", "version"])
def test_required_field_missing_is_refused(field: str) -> None:
    data = valid_metadata()
    del data[field]
    refused(data, f"metadata.json: '{field}' is required")


@pytest.mark.parametrize(
    "bad", ["AI_chatbot", "1chatbot", "a", "ai-chatbot", "a" * 65, "ai chatbot", 7, "ai_chatbot\n"]
)
def test_id_must_match_pattern(bad: Any) -> None:
    refused(valid_metadata(id=bad), "'id' must match ^[a-z][a-z0-9_]{1,63}$ (got")


@pytest.mark.parametrize("bad", ["import", "class", "match", "async"])
def test_id_must_not_be_a_python_keyword(bad: str) -> None:
    refused(valid_metadata(id=bad), f"'id' must not be a Python keyword (got '{bad}')")


@pytest.mark.parametrize("bad", ["1.x", "latest", "", " 1.0", 1.0, None])
def test_version_must_be_pep440(bad: Any) -> None:
    refused(valid_metadata(version=bad), "'version' must be PEP 440 (got")


def test_version_message_matches_the_style_guide() -> None:
    err = refused(valid_metadata(version="1.x"), "")
    assert str(err) == "metadata.json: 'version' must be PEP 440 (got '1.x')"


def test_a_new_package_with_an_epoch_is_refused_and_a_tree_with_one_still_reads() -> None:
    """Found from outside: `1!2.0.0` (a PEP 440 epoch) became a store path in index.ts, and webpack
    reads `!` as its loader separator: the host's build failed after the install was accepted. A
    package is refused at intake and pack (`refuse_new`); a tree an earlier atomicplug installed
    still reads (found in review: a rollback to one was refused)."""
    from atomicplug.metadata import refuse_new

    meta = Metadata.from_dict(valid_metadata(version="1!2.0.0"))
    with pytest.raises(MetadataError) as info:
        refuse_new(meta)
    assert str(info.value) == (
        "metadata.json: 'version' must not have an epoch: the version is part of a path bundlers read, "
        "and webpack takes '!' for its loader separator (got '1!2.0.0')"
    )
    refuse_new(Metadata.from_dict(valid_metadata(version="2.0.0")))


@pytest.mark.parametrize("field", ["name", "author", "description", "category"])
def test_text_fields_must_be_strings(field: str) -> None:
    refused(valid_metadata(**{field: ["x"]}), f"'{field}' must be a string (got ['x'])")


def test_name_must_not_be_empty() -> None:
    refused(valid_metadata(name="  "), "'name' must not be empty")


def test_name_must_not_contain_control_characters() -> None:
    refused(valid_metadata(name="evil\x1b[2J"), "'name' must not contain control characters")


def test_description_may_span_lines_but_not_hold_escapes() -> None:
    Metadata.from_dict(valid_metadata(description="line one\nline two\ttabbed"))
    refused(valid_metadata(description="x\x1b[31m"), "'description' must not contain control characters")


def test_over_long_text_is_refused() -> None:
    refused(valid_metadata(name="n" * 201), "'name' must be at most 200 characters")


@pytest.mark.parametrize("bad", ["free", True, [1], {"amount": 1}])
def test_price_must_be_a_number_or_null(bad: Any) -> None:
    refused(valid_metadata(price=bad), "'price' must be a number or null")


@pytest.mark.parametrize("bad", [-1, -0.01, float("inf"), float("nan")])
def test_price_must_be_non_negative(bad: float) -> None:
    refused(valid_metadata(price=bad), "'price' must be >= 0")


def test_requires_must_be_a_list() -> None:
    refused(valid_metadata(requires="email_core"), "'requires' must be a list")


@pytest.mark.parametrize("bad", ["Email_core", "email-core>=1", "email_core>=1.x", "email_core ~ 1", "", "x>=1"])
def test_requires_entries_must_be_id_or_id_with_specifier(bad: str) -> None:
    refused(valid_metadata(requires=[bad]), "'requires[0]' must be 'id' or 'id<specifier>'")


def test_requires_entries_must_be_strings() -> None:
    refused(valid_metadata(requires=[{"id": "email_core"}]), "'requires[0]' must be a string")


def test_requires_must_not_name_itself() -> None:
    refused(valid_metadata(requires=["ai_chatbot"]), "'requires[0]' must not name the plugin itself")


def test_requires_must_not_repeat_a_plugin() -> None:
    refused(valid_metadata(requires=["email_core", "email_core>=2"]), "'requires[1]' repeats a plugin")


def test_backend_must_be_an_object() -> None:
    refused(valid_metadata(backend=["x"]), "'backend' must be an object")


@pytest.mark.parametrize("bad", ["httpx>=>1", "not a requirement!", 3])
def test_backend_dependencies_must_be_pep508(bad: Any) -> None:
    refused(valid_metadata(backend={"dependencies": [bad]}), "'backend.dependencies[0]' must be a PEP 508 requirement")


@pytest.mark.parametrize("field", ["models", "routes"])
def test_backend_lists_hold_names_or_objects(field: str) -> None:
    refused(valid_metadata(backend={field: [""]}), f"'backend.{field}[0]' must be a non-empty string or an object")
    refused(valid_metadata(backend={field: "x"}), f"'backend.{field}' must be a list")


def test_frontend_must_be_an_object() -> None:
    refused(valid_metadata(frontend="x"), "'frontend' must be an object")


@pytest.mark.parametrize("field", ["routes", "components"])
def test_frontend_lists_hold_names_or_objects(field: str) -> None:
    refused(valid_metadata(frontend={field: [1]}), f"'frontend.{field}[0]' must be a non-empty string or an object")


@pytest.mark.parametrize("bad", [{"bad name!": "1"}, ["../evil"], [3]])
def test_frontend_dependencies_must_name_npm_packages(bad: Any) -> None:
    refused(valid_metadata(frontend={"dependencies": bad}), "'frontend.dependencies")


def test_frontend_dependency_range_must_be_a_string() -> None:
    refused(
        valid_metadata(frontend={"dependencies": {"react": 18}}),
        "'frontend.dependencies.react' must be an npm version range",
    )


def test_unknown_permission_is_refused() -> None:
    refused(
        valid_metadata(permissions=["api.routes", "root.shell"]),
        "'permissions[1]' must be a known permission (got 'root.shell')",
    )


def test_permissions_must_be_a_list() -> None:
    refused(valid_metadata(permissions="api.routes"), "'permissions' must be a list")


# -- collecting problems ------------------------------------------------------------------


def test_every_problem_is_collected_and_counted() -> None:
    err = refused({"id": "Bad", "version": "1.x", "price": -1}, "'id' must match")
    assert str(err).endswith("(and 3 more)")
    problems = err.problems  # type: ignore[attr-defined]
    assert len(problems) == 4
    assert any("'version' must be PEP 440" in p for p in problems)
    assert any("'name' is required" in p for p in problems)


# -- JSON-level rules ---------------------------------------------------------------------


def test_non_utf8_json_is_refused() -> None:
    with pytest.raises(MetadataError, match="not UTF-8"):
        Metadata.from_json_bytes(b'{"id": "\xff"}')


def test_invalid_json_is_refused_with_position() -> None:
    with pytest.raises(MetadataError, match="not valid JSON .* line 1"):
        Metadata.from_json_bytes(b'{"id": ')


def test_non_object_json_is_refused() -> None:
    with pytest.raises(MetadataError, match="must hold a JSON object"):
        Metadata.from_json_bytes(b"[1, 2]")


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(MetadataError, match="repeats the key 'id'"):
        Metadata.from_json_bytes(b'{"id": "good_one", "name": "x", "version": "1", "id": "evil_one"}')


def test_nan_and_infinity_are_refused() -> None:
    with pytest.raises(MetadataError, match="not valid JSON"):
        Metadata.from_json_bytes(b'{"id": "abc", "name": "x", "version": "1", "price": NaN}')


def test_deeply_nested_json_is_refused_without_recursion_error() -> None:
    with pytest.raises(MetadataError, match="not valid JSON"):
        Metadata.from_json_bytes(b"[" * 100_000 + b"]" * 100_000)


def test_huge_integer_is_refused() -> None:
    with pytest.raises(MetadataError):
        Metadata.from_json_bytes(b'{"price": ' + b"9" * 10_000 + b"}")


def test_utf8_bom_is_tolerated() -> None:
    meta = Metadata.from_json_bytes(b"\xef\xbb\xbf" + json.dumps(valid_metadata()).encode())
    assert meta.id == "ai_chatbot"
