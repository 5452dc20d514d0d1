"""Generated reference pages: up to date, complete, and with working links."""

from __future__ import annotations

import difflib
import functools
import importlib.util
import inspect
import itertools
import math
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, get_args

import pandas as pd
import pytest
import typer
import typer.main
import yaml
from pydantic import BaseModel, Field

from healthscore.config import load_project
from healthscore.config.loader import expand_variables
from healthscore.config.models import (
    REQUIRED_COLUMNS,
    STANDARD_COLUMNS,
    Duration,
    NormalizeConfig,
    ProjectConfig,
)
from healthscore.scoring.normalize import normalize

REPO_ROOT = Path(__file__).resolve().parents[1]
GENERATOR = REPO_ROOT / "scripts" / "gen_docs.py"
HAND_WRITTEN_PAGES = [
    "README.md",
    "CHANGELOG.md",
    "docs/index.md",
    "docs/architecture.md",
]


@functools.cache
def load_generator() -> types.ModuleType:
    """Import scripts/gen_docs.py as a module."""
    spec = importlib.util.spec_from_file_location("gen_docs", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses looks the module up in sys.modules while the file executes.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess:
    """Run the generator in a fresh process into a temporary folder."""
    folder = tmp_path_factory.mktemp("docs")
    command = [sys.executable, str(GENERATOR), "--output-dir", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    result.folder = folder  # type: ignore[attr-defined]
    return result


def assert_page_current(generated: subprocess.CompletedProcess, name: str) -> None:
    fresh = generated.folder / name  # type: ignore[attr-defined]
    assert fresh.is_file(), f"{name} was not generated:\n{generated.stderr}"
    committed = REPO_ROOT / "docs" / name
    assert committed.is_file(), f"docs/{name} is missing; run `make docs`"

    difference = difflib.unified_diff(
        committed.read_text(encoding="utf-8").splitlines(),
        fresh.read_text(encoding="utf-8").splitlines(),
        f"docs/{name}",
        "generated",
        lineterm="",
    )
    shown = "\n".join(itertools.islice(difference, 40))
    assert not shown, f"docs/{name} is out of date; run `make docs`:\n{shown}"


def test_configuration_page_current(generated: subprocess.CompletedProcess) -> None:
    assert_page_current(generated, "configuration.md")


def test_cli_page_current(generated: subprocess.CompletedProcess) -> None:
    if importlib.util.find_spec("healthscore.cli") is None:
        pytest.skip("healthscore.cli does not exist, so there is no CLI page")
    assert generated.returncode == 0, generated.stderr
    assert_page_current(generated, "cli.md")


# Configuration page: every key of every model, found by an independent walk.


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """Find the models in a field annotation, looking through every type argument."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [] if annotation is Duration else [annotation]
    found = []
    for arg in get_args(annotation):
        found += models_in(arg)
    return found


def reachable_models(root: type[BaseModel]) -> list[type[BaseModel]]:
    models = [root]
    for model in models:
        for field in model.model_fields.values():
            models += [m for m in models_in(field.annotation) if m not in models]
    return models


def page_sections(text: str) -> dict[str, str]:
    """Split a generated page into its sections by their HTML anchors."""
    parts = re.split(r'<a id="([^"]+)"></a>', text)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def table_row(section: str, key: str) -> list[str]:
    """Return the cells of the table row of `key`, or an empty list."""
    for line in section.splitlines():
        if line.startswith(f"| `{key}` |"):
            return [cell.strip() for cell in line.strip("|").split(" | ")]
    return []


def config_keys() -> list[tuple[type[BaseModel], str]]:
    return [
        (model, field.alias or name)
        for model in reachable_models(ProjectConfig)
        for name, field in model.model_fields.items()
    ]


def test_config_walk_finds_nested_models() -> None:
    models = {model.__name__ for model in reachable_models(ProjectConfig)}

    # A metric type, a model inside a metric, and one four levels down.
    assert "RateMetric" in models
    assert "WindowConfig" in models
    assert "Step" in models
    assert "Duration" not in models


@pytest.mark.parametrize(
    ("model", "key"), config_keys(), ids=lambda value: getattr(value, "__name__", value)
)
def test_config_key_documented(model: type[BaseModel], key: str) -> None:
    sections = page_sections((REPO_ROOT / "docs" / "configuration.md").read_text())
    anchor = model.__name__.lower()

    assert anchor in sections, f"docs/configuration.md has no section for {anchor}"
    row = table_row(sections[anchor], key)
    assert row, f"{model.__name__}.{key} is not in docs/configuration.md"
    assert len(row) == 4, f"malformed row for {model.__name__}.{key}: {row}"
    assert row[3], f"{model.__name__}.{key} has no description; add one in models.py"


def test_configuration_links_resolve() -> None:
    text = (REPO_ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    anchors = set(page_sections(text))

    links = set(re.findall(r"\]\(#([^)]+)\)", text))

    assert links, "docs/configuration.md links no section"
    assert links <= anchors, f"links without a section: {sorted(links - anchors)}"


def configuration_page() -> str:
    return (REPO_ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def kind_tables(section: str) -> dict[str, dict[str, list[str]]]:
    """Parse the standard columns section: kind -> column -> cells after the name."""
    tables: dict[str, dict[str, list[str]]] = {}
    kind = ""
    for line in section.splitlines():
        heading = re.fullmatch(r"### `(\w+)`", line)
        if heading:
            kind = heading.group(1)
            tables[kind] = {}
        row = re.match(r"\| `(\w+)` \| (.*) \|$", line)
        if row and kind:
            tables[kind][row.group(1)] = [
                cell.strip() for cell in row.group(2).split(" | ")
            ]
    return tables


def test_standard_columns_documented() -> None:
    tables = kind_tables(page_sections(configuration_page())["standard-columns"])

    assert list(tables) == list(STANDARD_COLUMNS)
    for kind, columns in STANDARD_COLUMNS.items():
        assert list(tables[kind]) == list(columns), kind
        for column, column_type in columns.items():
            documented_type, required = tables[kind][column][:2]
            expected = "yes" if column in REQUIRED_COLUMNS[kind] else "no"
            assert documented_type == column_type, f"{kind}.{column}"
            assert required == expected, f"{kind}.{column}"


def test_subscription_end_documented_exclusive() -> None:
    tables = kind_tables(page_sections(configuration_page())["standard-columns"])

    notes = tables["subscriptions"]["end"][2]
    assert "start <= d < end" in notes
    assert "an empty end means it is still open" in notes


def test_source_path_documents_variables() -> None:
    row = table_row(page_sections(configuration_page())["sourceconfig"], "path")

    assert "`${NAME}` or `${NAME:-default}`" in row[3]
    assert "unset or empty" in row[3]


def test_path_variables_work_as_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HS_DOCS_SET", "/srv/data")
    monkeypatch.setenv("HS_DOCS_EMPTY", "")
    monkeypatch.delenv("HS_DOCS_UNSET", raising=False)

    assert expand_variables("${HS_DOCS_SET}/a.csv") == "/srv/data/a.csv"
    assert expand_variables("${HS_DOCS_SET:-x}/a.csv") == "/srv/data/a.csv"
    assert expand_variables("${HS_DOCS_UNSET:-data}/a.csv") == "data/a.csv"
    assert expand_variables("${HS_DOCS_EMPTY:-data}/a.csv") == "data/a.csv"
    with pytest.raises(ValueError, match="environment variable HS_DOCS_UNSET is not"):
        expand_variables("${HS_DOCS_UNSET}/a.csv")


def test_normalization_formulas_documented() -> None:
    section = page_sections(configuration_page())["normalizeconfig"]
    method = table_row(section, "method")[3]
    log = table_row(section, "log")[3]
    measure = page_sections(configuration_page())["measureconfig"]
    direction = table_row(measure, "direction")[3]

    assert "100 * (r - 0.5) / n" in method
    assert "a group of one scores 50" in method
    assert "100 / (1 + exp(-z))" in method
    assert "population standard deviation (divided by n)" in method
    assert "clipped to 0-100" in method
    assert "100 * min(value / target, 1)" in table_row(section, "target")[3]
    assert "log(1 + value)" in log
    assert "original units" in log
    assert "100 - s" in direction


def test_documented_formulas_match_normalize() -> None:
    # Ranks of 10, 20, 20, 40 are 1, 2.5, 2.5 and 4 (ties share the average).
    values = pd.Series([10.0, 20.0, 20.0, 40.0])
    percentiles = normalize(values, NormalizeConfig(method="percentile"))
    mean = 22.5
    std = math.sqrt(sum((value - mean) ** 2 for value in values) / 4)
    expected_z = [100 / (1 + math.exp(-(value - mean) / std)) for value in values]
    zscores = normalize(values, NormalizeConfig(method="zscore"))
    lower = normalize(values, NormalizeConfig(method="percentile"), "lower")
    single = normalize(pd.Series([7.0]), NormalizeConfig(method="percentile"))
    logged = normalize(
        pd.Series([0.0, 9.0, 99.0]),
        NormalizeConfig(method="bounds", min=0, max=99, log=True),
    )

    assert percentiles.tolist() == [12.5, 50.0, 50.0, 87.5]
    assert zscores.tolist() == pytest.approx(expected_z, abs=1e-9)
    assert lower.tolist() == [87.5, 50.0, 50.0, 12.5]
    assert single.tolist() == [50.0]
    # log(1 + 9) / log(1 + 99) = 1 / 2, because log(100) = 2 * log(10).
    assert logged.tolist() == pytest.approx([0.0, 50.0, 100.0], abs=1e-9)


# Validation wording in the hand-written pages.


@pytest.mark.parametrize(
    "page", ["docs/index.md", "src/healthscore/scaffold/project_readme.md"]
)
def test_validate_data_documented(page: str) -> None:
    text = " ".join((REPO_ROOT / page).read_text(encoding="utf-8").split())

    assert "checks `healthscore.yml` alone" in text
    assert "does not read the data" in text
    assert "--data` also reads every source" in text


# Generator internals: robust to models and commands being added.


class Inner(BaseModel):
    """Leaf model."""

    size: int = Field(ge=1, description="Size in rows.")


class FirstKind(BaseModel):
    """First kind."""

    type: str = "first"
    inner: Inner | None = Field(default=None, description="Optional inner.")


class SecondKind(BaseModel):
    """Second kind."""

    type: str = "second"


class Root(BaseModel):
    """Root model."""

    items: dict[str, list[Inner]] = Field(description="Nested inners.")
    kinds: dict[str, FirstKind | SecondKind] = Field(description="Kinds.")
    every: Duration = Field(description="How often.")


def test_walk_sections_paths() -> None:
    generator = load_generator()

    sections = generator.walk_sections(Root)

    paths = [
        (section.path, getattr(section.target, "__name__", "")) for section in sections
    ]
    assert paths == [
        ("", "Root"),
        ("items.<name>[]", "Inner"),
        ("kinds.<name>", "FirstKind"),
        ("kinds.<name>", "SecondKind"),
    ]


def test_type_text_of_nested_types() -> None:
    generator = load_generator()
    fields = Root.model_fields

    assert generator.type_text(fields["items"].annotation) == (
        "mapping of string to list of [Inner](#inner)"
    )
    assert generator.type_text(FirstKind.model_fields["inner"].annotation) == (
        "[Inner](#inner) (or null)"
    )
    assert generator.type_text(fields["every"].annotation) == "[duration](#durations)"
    assert generator.field_type_text(Inner.model_fields["size"], "size") == (
        "integer, >= 1"
    )


def build_app() -> typer.Typer:
    """A CLI with a nested group and a hidden command."""
    app = typer.Typer()
    group = typer.Typer(help="Group.")
    app.add_typer(group, name="group")

    @app.command()
    def first() -> None:
        """First command."""

    @app.command(hidden=True)
    def secret() -> None:
        """Hidden command."""

    @group.command()
    def inner() -> None:
        """Inner command."""

    @group.command()
    def other() -> None:
        """Other command."""

    return app


def test_command_paths_nested_and_hidden() -> None:
    generator = load_generator()

    paths = generator.command_paths(build_app())

    assert paths == [(), ("first",), ("group",), ("group", "inner"), ("group", "other")]


# CLI page: every command and option, from the real app.


def cli_app() -> Any:
    if importlib.util.find_spec("healthscore.cli") is None:
        pytest.skip("healthscore.cli does not exist, so there is no CLI page")
    module = importlib.import_module("healthscore.cli")
    return load_generator().find_app(module)


def visible_commands(app: Any) -> list[tuple[str, Any]]:
    """List every visible command with its full name, walking groups."""
    root = typer.main.get_command(app)
    found = [("healthscore", root)]
    for name, command in found:
        children = getattr(command, "commands", {})
        for child_name, child in children.items():
            if not child.hidden:
                found.append((f"{name} {child_name}", child))
    return found


def test_every_cli_command_documented() -> None:
    commands = visible_commands(cli_app())
    page = (REPO_ROOT / "docs" / "cli.md").read_text(encoding="utf-8")

    for name, command in commands:
        assert f"## `{name}`\n" in page, f"`{name}` is not in docs/cli.md"
        assert command.help, f"`{name}` has no help text; add a docstring"


def test_every_cli_option_has_help() -> None:
    commands = visible_commands(cli_app())

    for name, command in commands:
        for parameter in command.params:
            if parameter.param_type_name == "option" and not parameter.hidden:
                assert parameter.help, f"`{name} {parameter.opts[0]}` has no help text"


# Hand-written pages.


@pytest.mark.parametrize("page", HAND_WRITTEN_PAGES)
def test_relative_links_resolve(page: str) -> None:
    path = REPO_ROOT / page
    text = path.read_text(encoding="utf-8")

    targets = re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", text)

    for target in targets:
        assert (path.parent / target).exists(), f"{page} links to missing {target}"


def yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)


def test_index_example_project_loads(tmp_path: Path) -> None:
    blocks = yaml_blocks((REPO_ROOT / "docs" / "index.md").read_text(encoding="utf-8"))
    assert len(blocks) == 1, "docs/index.md should have exactly one example project"
    (tmp_path / "healthscore.yml").write_text(blocks[0], encoding="utf-8")
    # The loader checks that source files exist, so create empty ones.
    for source in yaml.safe_load(blocks[0])["sources"].values():
        (tmp_path / source["path"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / source["path"]).touch()

    project = load_project(tmp_path)

    assert project.config.name == "example"
    assert list(project.config.metrics) == ["logins_28d", "days_since_login"]
