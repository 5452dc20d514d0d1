"""The `serve` command (the web service), the `token` commands (its API tokens) and
the `writekey` commands (keys of its ingest routes)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.logging import RichHandler
from rich.table import Table

from healthscore.choices import TOKEN_ROLES
from healthscore.cli.common import (
    JsonOption,
    ProjectOption,
    VerboseOption,
    handle_errors,
    note,
    open_project,
    print_json,
    say,
    stderr_console,
    stdout_console,
)
from healthscore.config import Project

# Modules that load pandas, DuckDB or SQLAlchemy are imported inside the functions
# that use them, so that `healthscore --help` does not load them.
if TYPE_CHECKING:
    from healthscore.store import StateStore

token_app = typer.Typer(
    help="Create, list and revoke the API tokens of the web service.",
    no_args_is_help=True,
)


writekey_app = typer.Typer(
    help="Create, list and revoke the write keys of the ingest routes.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the `serve`, `token` and `writekey` commands."""
    app.command()(serve)
    app.add_typer(token_app, name="token")
    app.add_typer(writekey_app, name="writekey")


def _state_store(project: Project) -> StateStore:
    from healthscore.store import StateStore

    return StateStore.open(project.config.store.state, project.root)


@handle_errors
def serve(
    host: Annotated[
        str | None,
        typer.Option(
            "--host", help="Address to listen on; default service.host (127.0.0.1)."
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=1,
            max=65535,
            help="TCP port to listen on; default service.port (8000).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="Request processes; default service.workers (1). One of them "
            "rescores ingested events for all.",
        ),
    ] = None,
    secure_cookies: Annotated[
        bool,
        typer.Option(
            "--secure-cookies",
            help="Mark dashboard session cookies Secure even on plain http, for a "
            "service behind an https proxy. Over https they are Secure anyway.",
        ),
    ] = False,
    project_dir: ProjectOption = Path("."),
    # INFO by default, so the access log (one line per request) is on.
    verbose: VerboseOption = 1,
) -> None:
    """Run the web service (REST API with OpenAPI docs at /docs) until stopped.

    Logs one line per request on stderr: method, route, status, duration, token id.
    With -vv the other modules' DEBUG and INFO messages, which can name accounts
    and people, are logged too.
    """
    import uvicorn

    from healthscore.service import create_app
    from healthscore.service.app import (
        PROJECT_VARIABLE,
        SECURE_COOKIES_VARIABLE,
        VERBOSE_VARIABLE,
        app_from_environment,
        check_startup,
        service_log_levels,
    )
    from healthscore.service.protocol import JsonErrorProtocol

    project = open_project(project_dir)
    settings = project.config.service
    bind_host = host or settings.host
    bind_port = port or settings.port
    processes = workers or settings.workers
    check_startup(project)
    note(f"Serving {project.config.name} at http://{bind_host}:{bind_port}/docs")
    if processes > 1:
        # Uvicorn starts each request process anew, so they build the app from
        # these settings (see `healthscore.service.app.app_from_environment`).
        os.environ[PROJECT_VARIABLE] = str(project.root)
        os.environ[SECURE_COOKIES_VARIABLE] = "1" if secure_cookies else ""
        os.environ[VERBOSE_VARIABLE] = str(verbose)
        # The service's access log replaces Uvicorn's, which prints query strings.
        with _plain_log_lines(), _explain_failed_start(bind_host, bind_port):
            uvicorn.run(
                f"{app_from_environment.__module__}:{app_from_environment.__name__}",
                factory=True,
                workers=processes,
                host=bind_host,
                port=bind_port,
                access_log=False,
                log_config=None,
                http=JsonErrorProtocol,
                timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
            )
        return
    app = create_app(project, secure_cookies=secure_cookies)
    service_log_levels(verbose)
    with _plain_log_lines(), _explain_failed_start(bind_host, bind_port):
        uvicorn.run(
            app,
            host=bind_host,
            port=bind_port,
            access_log=False,
            log_config=None,
            http=JsonErrorProtocol,
        )


#: Seconds a request process may take to reply to Uvicorn's health check. A new
#: process imports healthscore with pandas, scikit-learn and DuckDB before it can
#: reply. On a busy 2-CPU machine that took longer than Uvicorn's default of 5 s,
#: so Uvicorn killed and restarted the processes without end.
WORKER_HEALTHCHECK_SECONDS = 60


@contextmanager
def _explain_failed_start(host: str, port: int) -> Iterator[None]:
    """Turn Uvicorn's exit on a failed start into an error that names what to check.

    Uvicorn logs the cause, such as an address in use, and exits with status 3.
    """
    from uvicorn.config import STARTUP_FAILURE

    try:
        yield
    except SystemExit as exc:
        if exc.code != STARTUP_FAILURE:
            raise
        stderr_console().print(
            f"error: the service did not start on {host}:{port}; the ERROR line above "
            "gives the cause. When the address is in use, another process listens "
            "on that port: stop it, or pass --port with a free port (or set "
            "service.port). When the address cannot be assigned, --host is not an "
            "address of this machine.",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=1) from None


@contextmanager
def _plain_log_lines() -> Iterator[None]:
    """Log plain text lines instead of Rich's layout while the service runs.

    Rich lays out every record in Python, which cost about a quarter of the server's
    CPU time per account read under load (a py-spy profile of benchmarks/ingest.py),
    and service logs are read by log collectors rather than on a terminal.
    """
    package = logging.getLogger("healthscore")
    replaced = [h for h in package.handlers if isinstance(h, RichHandler)]
    from healthscore.service.logs import SERVICE_LOG_FORMAT

    plain = logging.StreamHandler(sys.stderr)
    plain.setFormatter(logging.Formatter(SERVICE_LOG_FORMAT))
    if replaced:
        plain.setLevel(replaced[0].level)
    for handler in replaced:
        package.removeHandler(handler)
    package.addHandler(plain)
    # Uvicorn's own messages, such as a request process that died and was started
    # again, in the same lines. Its access log stays off.
    server = logging.getLogger("uvicorn.error")
    server_level = server.level
    server.addHandler(plain)
    server.setLevel(logging.INFO)
    try:
        yield
    finally:
        package.removeHandler(plain)
        server.removeHandler(plain)
        server.setLevel(server_level)
        for handler in replaced:
            package.addHandler(handler)


RoleOption = Annotated[
    str,
    typer.Option(
        "--role",
        help=f"Role of the token: {', '.join(TOKEN_ROLES)}.",
        show_default=False,
    ),
]


@token_app.command("create")
@handle_errors
def token_create(
    role: RoleOption,
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner",
            help="Account owner whose accounts a csm token sees and changes; "
            "required for csm.",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Label of the token, such as the person or system using it; "
            "default the owner, else the role.",
        ),
    ] = None,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Create an API token and print it once; only its hash is stored."""
    from healthscore.service.tokens import create_token

    project = open_project(project_dir)
    label = name or owner or role
    with _state_store(project) as store:
        created = create_token(store, role=role, name=label, owner=owner)
    if json_output:
        print_json({"token": created.token, **_info_json(created.info)})
    else:
        say(created.token)
        note(
            f"Created token {created.info.id} ({created.info.role}"
            f"{f', owner {owner}' if owner else ''}). Store it now: it cannot be "
            "shown again. Send it as `Authorization: Bearer <token>`."
        )
    if created.info.role == "csm" and owner:
        _warn_unknown_owner(project, owner)


#: Owners named in the warning about an unknown owner; the rest are counted.
LISTED_OWNERS = 10


def _warn_unknown_owner(project: Project, owner: str) -> None:
    """Warn when no account of the accounts source has `owner`.

    A csm token can read only the accounts whose owner equals its owner as exact
    text, so a misspelt owner gives a token that reads no account. The token is
    still valid, because the owner's accounts can be assigned later.
    """
    # Imported here: reading the accounts source starts the engine.
    from healthscore.report.inputs import read_account_sources
    from healthscore.sources import SourceError

    try:
        accounts = read_account_sources(project).accounts()
    except SourceError as exc:
        note(f"warning: could not check the owner {owner!r}: {exc}")
        return
    if "owner" in accounts.columns:
        owners = sorted({str(value) for value in accounts["owner"].dropna()})
    else:
        owners = []
    if owner in owners:
        return
    if owners:
        listed = ", ".join(owners[:LISTED_OWNERS])
        if len(owners) > LISTED_OWNERS:
            listed += f" and {len(owners) - LISTED_OWNERS} more"
        known = f"the owners are {listed}"
    else:
        known = "the accounts source has no owner values"
    note(
        f"warning: no account has the owner {owner!r}, so this token sees no "
        f"account until one has; {known}. Check the spelling, or revoke the token "
        "and create one for the right owner."
    )


@token_app.command("list")
@handle_errors
def token_list(
    include_revoked: Annotated[
        bool, typer.Option("--all", help="Also list revoked tokens.")
    ] = False,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """List the API tokens, without their secrets."""
    from healthscore.service.tokens import list_tokens

    project = open_project(project_dir)
    with _state_store(project) as store:
        found = list_tokens(store, include_revoked=include_revoked)
    if json_output:
        print_json([_info_json(item) for item in found])
        return
    if not found:
        say("No tokens; create one with `healthscore token create --role ROLE`.")
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("Id", "Name", "Role", "Owner", "Created", "Revoked"):
        table.add_column(column, no_wrap=True)
    for item in found:
        revoked = (
            item.revoked_at.isoformat(timespec="seconds") if item.revoked_at else "-"
        )
        table.add_row(
            str(item.id),
            item.name,
            item.role,
            item.owner or "-",
            item.created_at.isoformat(timespec="seconds"),
            revoked,
        )
    stdout_console().print(table)


@token_app.command("revoke")
@handle_errors
def token_revoke(
    token_id: Annotated[int, typer.Argument(metavar="ID", help="Token id, from list.")],
    project_dir: ProjectOption = Path("."),
    verbose: VerboseOption = 0,
) -> None:
    """Revoke an API token; requests with it get 401 from then on."""
    from healthscore.service.tokens import TokenNotFoundError, revoke_token

    project = open_project(project_dir)
    with _state_store(project) as store:
        try:
            revoke_token(store, token_id)
        except TokenNotFoundError as exc:
            raise ValueError(str(exc)) from None
    say(f"Revoked token {token_id}.")


def _info_json(info: object) -> dict[str, object]:
    from healthscore.service.serialize import jsonable

    result: dict[str, object] = jsonable(info)
    return result


@writekey_app.command("create")
@handle_errors
def writekey_create(
    source: Annotated[
        str,
        typer.Option(
            "--source", metavar="NAME", help="Store source (path: store) to append to."
        ),
    ],
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Create a write key for a store source and print it once."""
    from healthscore.service.writekeys import create_write_key

    project = open_project(project_dir)
    with _state_store(project) as store:
        created = create_write_key(store, project, source)
    if json_output:
        print_json({"key": created.key, **_info_json(created.info)})
        return
    say(created.key)
    note(
        f"Created write key {created.info.id} for source {source}. Store it now: it "
        "cannot be shown again. Send it as the basic-auth user name with an empty "
        "password."
    )


@writekey_app.command("list")
@handle_errors
def writekey_list(
    include_revoked: Annotated[
        bool, typer.Option("--all", help="Also list revoked write keys.")
    ] = False,
    project_dir: ProjectOption = Path("."),
    json_output: JsonOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """List the write keys, without their secrets."""
    from healthscore.service.writekeys import list_write_keys

    project = open_project(project_dir)
    with _state_store(project) as store:
        found = list_write_keys(store, include_revoked=include_revoked)
    if json_output:
        print_json([_info_json(item) for item in found])
        return
    if not found:
        say("No write keys; create one with `healthscore writekey create --source`.")
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("Id", "Source", "Created", "Revoked"):
        table.add_column(column, no_wrap=True)
    for item in found:
        revoked = (
            item.revoked_at.isoformat(timespec="seconds") if item.revoked_at else "-"
        )
        table.add_row(
            str(item.id),
            item.source,
            item.created_at.isoformat(timespec="seconds"),
            revoked,
        )
    stdout_console().print(table)


@writekey_app.command("revoke")
@handle_errors
def writekey_revoke(
    key_id: Annotated[
        int, typer.Argument(metavar="ID", help="Write key id, from list.")
    ],
    project_dir: ProjectOption = Path("."),
    verbose: VerboseOption = 0,
) -> None:
    """Revoke a write key; requests with it get 401 from then on."""
    from healthscore.service.writekeys import WriteKeyNotFoundError, revoke_write_key

    project = open_project(project_dir)
    with _state_store(project) as store:
        try:
            revoke_write_key(store, key_id)
        except WriteKeyNotFoundError as exc:
            raise ValueError(str(exc)) from None
    say(f"Revoked write key {key_id}.")
