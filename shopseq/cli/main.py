"""The ``shopseq`` command line: ingest and clean -> encode -> split (-> train, evaluate, serve)."""

from __future__ import annotations

import typer

from shopseq.cli import app_commands, data_commands, demo_commands, model_commands, sequence_commands, serve_commands

app = typer.Typer(
    name="shopseq",
    help="Predict what e-commerce shoppers do next, from their behaviour sequences.\n\n"
    "Start with `shopseq demo` (a synthetic shop end to end), or `shopseq ingest FILE` on your own "
    "event log, then `shopseq stats`, `shopseq encode` and `shopseq split`. "
    "Every command works in the workspace folder ./shopseq-workspace unless --workspace or "
    "SHOPSEQ_WORKSPACE says otherwise.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
demo_commands.register(app)
data_commands.register(app)
sequence_commands.register(app)
model_commands.register(app)
app_commands.register(app)
serve_commands.register(app)

if __name__ == "__main__":
    app()
