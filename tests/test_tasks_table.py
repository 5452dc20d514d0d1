"""`healthscore tasks list` at 80 columns: long names break only between words.

Rich wraps a cell at spaces and folds a longer word at any letter. The task table
breaks playbook names after underscores and hyphens, and owners and titles after
spaces, so each line of a cell is a whole piece of the name.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.monitoring.playbooks import apply_playbooks
from healthscore.pipeline import score
from healthscore.store import StateStore
from project_factory import minimal_config, write_project

AS_OF = date(2026, 3, 1)
NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)

PLAYBOOK = "executive_business_review"
TITLE = "Schedule an executive business review with the sponsor of {name}"

ACCOUNTS = """account_id,name,segment,owner,arr
a1,Acme,enterprise,Kwame Mensah,120000
a2,Globex,smb,customer-success-team,9000
"""

EVENTS = "account_id,timestamp\na1,2026-02-10\na2,2026-02-11\n"


#: A column of a table as its header and the next column's header (None: last).
Span = tuple[str, str | None]


def column_cells(
    output: str, column: Span, row_key: Span = ("Id", "Due"), first: str = "Id"
) -> list[list[str]]:
    """Return the lines of each cell of one column of a table with a header row.

    The header row starts with `first`. A column spans from the start of its header
    to the start of the next one. A row starts on a line where the `row_key` column,
    whose values take one line, has text.
    """
    lines = output.splitlines()
    heading = next(line for line in lines if line.split()[:1] == [first])

    def cut(line: str, span: Span) -> str:
        start = heading.index(span[0])
        end = heading.index(span[1]) if span[1] else None
        return line[start:end].strip()

    cells: list[list[str]] = []
    for line in lines[lines.index(heading) + 2 :]:
        if not line.strip():
            continue
        if cut(line, row_key):
            cells.append([])
        text = cut(line, column)
        if text:
            cells[-1].append(text)
    return cells


def project_with_tasks(tmp_path):
    """Write a project whose playbook opened a task for each of its two accounts."""
    config = minimal_config(
        playbooks=[
            {
                "name": PLAYBOOK,
                "when": "score < 101",
                "task": {"title": TITLE, "owner": "owner", "priority": "high"},
            }
        ]
    )
    files = {"accounts.csv": ACCOUNTS, "events.csv": EVENTS}
    project = write_project(tmp_path / "project", config, files)
    run = score(project, AS_OF, store=False)
    with StateStore.open(project.config.store.state, project.root) as store:
        apply_playbooks(project, run, [], store, now=NOW)
    return project


def test_tasks_list_breaks_names_between_words(tmp_path):
    project = project_with_tasks(tmp_path)

    result = CliRunner().invoke(
        app,
        ["tasks", "list", "--project", str(project.root)],
        env={"COLUMNS": "80"},
    )

    assert result.exit_code == 0, result.output
    output = result.stdout
    assert max(len(line) for line in output.splitlines()) <= 80
    heading = next(line for line in output.splitlines() if "Id" in line.split())
    for header in ("Priority", "Owner", "Playbook", "Title"):
        assert header in heading.split()
    accounts = [cell[0] for cell in column_cells(output, ("Account", "Owner"))]
    playbooks = column_cells(output, ("Playbook", "Rank"))
    owners = dict(
        zip(accounts, column_cells(output, ("Owner", "Playbook")), strict=True)
    )
    titles = dict(zip(accounts, column_cells(output, ("Title", None)), strict=True))
    assert sorted(accounts) == ["a1", "a2"]
    for lines in playbooks:
        # The name is too long for its column, so it takes more than one line.
        assert len(lines) > 1
        assert "".join(lines) == PLAYBOOK
        assert all(line.endswith("_") for line in lines[:-1]), lines
    assert " ".join(owners["a1"]) == "Kwame Mensah"
    assert "".join(owners["a2"]) == "customer-success-team"
    assert all(line.endswith("-") for line in owners["a2"][:-1]), owners["a2"]
    for account, name in (("a1", "Acme"), ("a2", "Globex")):
        words = TITLE.format(name=name).split()
        assert " ".join(titles[account]).split() == words


def test_folded_rows_measure_wide_characters():
    import io
    import re

    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table

    from healthscore.cli.common import add_folded_rows

    name = "executive_business_review_for_at_risk_accounts"
    # 20 CJK characters: 40 cells on screen, though 20 characters long.
    title = "顧客との定期的な打ち合わせを予定して状況を確認する"
    table = Table("Title", "Playbook", box=None)
    add_folded_rows(table, [[title, name]], width=60)
    console = Console(width=60, record=True, file=io.StringIO())
    console.print(table)
    lines = console.export_text().splitlines()

    assert all(cell_len(line.rstrip()) <= 60 for line in lines)
    # The first line contains the headers.
    pieces = [p for line in lines[1:] for p in re.findall(r"[a-z_]+", line)]
    assert "".join(pieces) == name
    assert all(piece.endswith("_") for piece in pieces[:-1])


def test_tasks_list_narrow_prints_records(tmp_path):
    project = project_with_tasks(tmp_path)

    result = CliRunner().invoke(
        app,
        ["tasks", "list", "--project", str(project.root)],
        env={"COLUMNS": "30"},
    )

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 30
    # Every field of both tasks is there, whole once the folded lines are joined.
    text = "".join(lines)
    for name in ("Acme", "Globex"):
        assert f"Title: {TITLE.format(name=name)}".replace(" ", "") in text.replace(
            " ", ""
        )
    assert text.count(f"Playbook: {PLAYBOOK}") == 2
    assert "Owner: Kwame Mensah" in text
    assert "Owner: customer-success-team" in text
    assert text.count("Priority: high") == 2
