"""The `edge-distill` command: one group, its errors rendered once, and the commands gathered from
edge_distill/commands/ (each module a group of commands that parse, call the library and render).
No logic lives here."""

from __future__ import annotations

import json

import click

from edge_distill import __version__
from edge_distill.commands import build, bundles, language, tools
from edge_distill.commands.options import JSON_KEY
from edge_distill.errors import EdgeDistillError, FileSystemError
from edge_distill.pipeline.registry import STAGES


class ErrorRenderingGroup(click.Group):
    """Renders library errors once: `Error:` and `Hint:` on stderr, the error's exit code, and with
    --json also the error as a JSON object on stdout. A failed read or write (permission, full or
    read-only disk) and running out of memory are rendered the same way."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException as e:  # a malformed flag: click renders it; with --json, JSON too
            if ctx.meta.get(JSON_KEY):
                click.echo(json.dumps({"error": e.format_message(), "hint": None, "exit_code": e.exit_code,
                                       "type": "UsageError"}, indent=2))
            raise
        except (EdgeDistillError, OSError, MemoryError) as e:
            if ctx.params.get("debug"):
                _show_causes(e)
                raise
            error = _as_user_error(e)
            if ctx.meta.get(JSON_KEY):
                click.echo(json.dumps({"error": error.message, "hint": error.hint, "exit_code": error.exit_code,
                                       "type": type(error).__name__}, indent=2))
            click.secho(f"Error: {error.message}", fg="red", err=True)
            if error.hint:
                click.echo(f"Hint: {error.hint}", err=True)
            ctx.exit(error.exit_code)


def _show_causes(error: BaseException) -> None:
    """With --debug, the traceback shows what went wrong inside a library too: user errors are
    raised `from None` for their one line, which hides that exception from the traceback."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__suppress_context__ = False
        error = error.__cause__ or error.__context__


def _as_user_error(error: Exception) -> EdgeDistillError:
    if isinstance(error, EdgeDistillError):
        return error
    if isinstance(error, OSError):
        return FileSystemError.from_os_error(error)
    return EdgeDistillError("out of memory", "use smaller batches or fewer samples, or free memory")


@click.group(cls=ErrorRenderingGroup)
@click.version_option(__version__, prog_name="edge-distill")
@click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
def main(debug: bool) -> None:
    """Distill a teacher into a small int8 ONNX model for a device, and measure it."""
    if debug:  # ONNX Runtime's own warnings shown (device.runner.create_session), in worker processes too
        import os

        os.environ["EDGE_DISTILL_DEBUG"] = "1"


COMMANDS = (build.build, build.sequence, language.text, language.llm, language.generate, bundles.verify,
            bundles.predict, bundles.bench, bundles.estimate, bundles.optimize, tools.cache, tools.emulator,
            tools.profiles)
for command in COMMANDS:
    main.add_command(command)
for stage in STAGES:  # `edge-distill quantize` and the other build stages, each a command of its own
    main.add_command(build.stage_command(stage))


if __name__ == "__main__":  # `python -m edge_distill.cli`, as the two-node test starts it
    main()
