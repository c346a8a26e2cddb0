"""Pieces every command shares: the workspace option, console output, error handling."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import duckdb
import typer
from rich.console import Console
from rich.table import Table

from shopseq.data.store import EventStore, StoreVersionError
from shopseq.data.workspace import WORKSPACE_ENV, Workspace
from shopseq.errors import IncompatibleModelError

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # errors unwrapped: paths stay copyable

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        envvar=WORKSPACE_ENV,
        help="Workspace folder (event store, key, rejects, caches). Default: ./shopseq-workspace.",
        show_default=False,
    ),
]

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """Turn expected failures (bad input, missing files, run directories this version cannot load)
    into one clear line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, StoreVersionError, IncompatibleModelError, duckdb.Error) as exc:
            err_console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def open_store(workspace: Path | None, read_only: bool = False) -> EventStore:
    return EventStore.open(Workspace.resolve(workspace), read_only=read_only)


def kv_table(title: str, rows: Iterable[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return table
