"""The ``gmm-stream`` command line: run, validate, schema, demo, serve.

Exit codes: 0 success; 1 the run failed; 2 the job file is missing or invalid (or a
usage error); 130 interrupted. A failure prints one line per problem (``error: ...``),
with the traceback only under ``--debug``.

Prefect is imported only by the commands that run flows, after this module has set
``PREFECT_SERVER_ANALYTICS_ENABLED=false``, ``DO_NOT_TRACK=1`` (client telemetry) and
``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=90`` as defaults (the temporary local
server takes 10-20 s to start cold). With no ``PREFECT_API_URL`` configured, flows run
against Prefect's temporary local server: nothing to set up.
"""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows import FLOWS
from flows.config import Job, job_json_schema, load_job
from flows.exceptions import ConfigError, JobNotFoundError

__all__ = ["app", "main"]

EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 1, 2, 130
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",  # Prefect's client-side (SDK) telemetry
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}

app = typer.Typer(
    name="gmm-stream",
    help="Gaussian mixture models on Dask, run as Prefect flows described in YAML jobs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JobArg = Annotated[Path, typer.Argument(help="The YAML job file.", show_default=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a key of the job: KEY.PATH=VALUE (VALUE read as YAML); repeatable.",
    show_default=False)]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the traceback of a failure.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's and gmm-stream's INFO logs.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar per EM iteration.")]


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _one_line(exc: BaseException) -> str:
    from gmm_stream.exceptions import GMMStreamError

    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, GMMStreamError) else f"{type(exc).__name__}: {text}"


@contextmanager
def _handled(debug: bool) -> Iterator[None]:
    """Turn exceptions into one-line messages and exit codes (tracebacks only with --debug)."""
    err = _stderr()
    try:
        yield
    except typer.Exit:
        raise
    except (ConfigError, JobNotFoundError) as exc:
        if debug:
            traceback.print_exc()
        lines = exc.lines if isinstance(exc, ConfigError) else [str(exc)]
        for line in lines:
            err.print(f"[red]error[/]: {escape(line)}")
        raise typer.Exit(EXIT_CONFIG) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:
        if debug:
            traceback.print_exc()
        err.print(f"[red]error[/]: {escape(_one_line(exc))}")
        raise typer.Exit(EXIT_FAILED) from None


# ------------------------------------------------------------------- prefect and logging


def _prefect_env() -> None:
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)


@contextmanager
def _console_logging(console: Console, verbose: bool) -> Iterator[None]:
    """Quiet Prefect's console handler (the API still gets every log); show our warnings.

    Prefect's console handler would print INFO lines and failure tracebacks; below
    ``--verbose`` only CRITICAL passes it. gmm-stream's own loggers and Python warnings
    are shown through rich (WARNING, or INFO with ``--verbose``).
    """
    from prefect.logging.handlers import PrefectConsoleHandler

    consoles = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    levels = [h.level for h in consoles]
    if not verbose:
        for handler in consoles:
            handler.setLevel(logging.CRITICAL)
    ours = RichHandler(console=console, show_time=False, show_path=False, markup=False)
    ours.setLevel(logging.INFO if verbose else logging.WARNING)
    names = ("flows", "pipeline", "gmm_stream")
    loggers = [logging.getLogger(n) for n in names]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(ours)
        lg.setLevel(logging.INFO if verbose else logging.WARNING)
        lg.propagate = False  # shown once, here
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        console.print(f"[yellow]warning[/]: {escape(str(message))} ({category.__name__})")

    warnings.showwarning = showwarning
    try:
        yield
    finally:
        warnings.showwarning = show
        for lg, (level, propagate) in zip(loggers, saved):
            lg.removeHandler(ours)
            lg.setLevel(level)
            lg.propagate = propagate
        for handler, level in zip(consoles, levels):
            handler.setLevel(level)


class _Bars:
    """A rich progress bar per fit, advanced by the EM callback (through :mod:`flows.progress`)."""

    def __init__(self, console: Console) -> None:
        self.progress, self.console, self.tasks = _new_progress(console), console, {}
        self.started = False

    def stop(self) -> None:
        if self.started:
            self.progress.stop()

    def __call__(self, ev: Any) -> None:
        if not self.started:  # started on the first iteration: no empty display on early failures
            self.progress.start()
            self.started = True
        desc = ev.fit_id + (f" init {ev.init + 1}/{ev.n_init}" if ev.n_init > 1 else "")
        key = (ev.fit_id, ev.init)
        if key not in self.tasks:
            start = f"resumed at iteration {ev.resumed_from}" if ev.resumed_from is not None else ""
            self.tasks[key] = self.progress.add_task(desc, total=ev.max_iter, lb="", status=start)
        task = self.tasks[key]
        status = self.progress.tasks[task].fields["status"] if ev.resumed_from is not None else ""
        self.progress.update(task, completed=ev.n_iter, description=desc, lb=f"{ev.lower_bound:.8g}",
                             status="converged" if ev.converged else status)
        if ev.converged or ev.n_iter >= ev.max_iter:
            self.progress.update(task, total=ev.n_iter)
            if not self.console.is_terminal:  # a log file gets one line per finished fit
                word = "converged" if ev.converged else "stopped (max_iter)"
                self.console.print(f"{desc}: {word} after {ev.n_iter} iterations, lower bound {ev.lower_bound:.8g}")


def _new_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("EM iterations"),
        TextColumn("lower bound {task.fields[lb]}"), TextColumn("[green]{task.fields[status]}"),
        TimeElapsedColumn(), console=console, transient=False,
    )


def _flow_for(name: str) -> Any:
    module, _, attr = FLOWS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def _api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def run_job(job: Job, job_path: Path, overrides: list[str], *, verbose: bool = False,
            progress: bool = True) -> dict[str, Any]:
    """Run the job's flow in this process, with progress bars; return the flow's summary."""
    from flows.progress import listening

    _prefect_env()
    err = _stderr()
    flow = _flow_for(job.flow)
    with _console_logging(err, verbose):
        if _api_url() is None:
            err.print("starting Prefect's temporary local server (10-20 s the first time)...")
        try:
            if not progress:
                return flow(job_path=str(job_path.absolute()), overrides=list(overrides))
            bars = _Bars(err)
            try:
                with listening(bars):
                    return flow(job_path=str(job_path.absolute()), overrides=list(overrides))
            finally:
                bars.stop()
        finally:
            if not verbose:  # runs before Prefect's own exit hook (LIFO): no "Stopping temporary server" line
                atexit.register(logging.getLogger("prefect").setLevel, logging.WARNING)


def _print_summary(summary: dict[str, Any]) -> None:
    out = _stdout()
    table = Table(title=f"gmm-stream {summary['flow']}: {summary['job']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("model", f"{summary.get('n_components')} components, {summary.get('covariance_type')} covariance"),
        ("best", summary.get("best") and f"{summary['best']} by {str(summary.get('criterion')).upper()}"),
        ("EM", f"{'converged' if summary.get('converged') else 'not converged'} after {summary.get('n_iter')} "
               f"iterations, lower bound {summary.get('lower_bound', float('nan')):.6g}"
         if summary["flow"] != "predict" else None),
        ("resumed", summary.get("resumed_from") is not None and f"from iteration {summary['resumed_from']}"),
        ("rows", summary.get("rows")),
        ("BIC / AIC / ICL", " / ".join(f"{summary[k]:.6g}" for k in ("bic", "aic", "icl") if k in summary)),
        ("label matching cost", summary.get("matching_cost") is not None and f"{summary['matching_cost']:.4g}"),
        ("anomalies", summary.get("anomalies")),
        ("model saved", summary["outputs"].get("model") if summary["flow"] != "predict" else None),
        ("predictions", ", ".join(summary["outputs"].get("predictions", [])) or None),
        ("report", summary.get("report")),
    ]
    for key, value in rows:
        if value not in (None, False, ""):
            table.add_row(key, escape(str(value)))
    out.print(table)


# ----------------------------------------------------------------------------- commands


@app.command()
def run(job: JobArg, set_: SetOpt = None, debug: DebugOpt = False, verbose: VerboseOpt = False,
        progress: ProgressOpt = True) -> None:
    """Run a job's flow locally (Prefect's temporary server unless PREFECT_API_URL is set)."""
    with _handled(debug):
        spec = load_job(job, set_ or [])
        _print_summary(run_job(spec, job, set_ or [], verbose=verbose, progress=progress))


@app.command()
def validate(job: JobArg, set_: SetOpt = None, debug: DebugOpt = False) -> None:
    """Check a job file (keys, types, values, environment variables) without reading any data."""
    with _handled(debug):
        spec = load_job(job, set_ or [])
        what = {"fit": lambda: f"{spec.model.n_components} components, {spec.model.covariance_type}",
                "select": lambda: f"grid n_components={spec.selection.n_components} x "
                                  f"{spec.selection.covariance_types}, by {spec.selection.criterion.upper()}",
                "predict": lambda: f"model {spec.predict.model}"}[spec.flow]()
        _stdout().print(f"{escape(str(job))}: valid ({spec.flow} flow: {spec.source.format} source "
                        f"{escape(spec.source.path)}; {escape(what)}; output {escape(spec.output.directory)})")


@app.command()
def schema(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """Print the JSON Schema of job files (for editors that validate YAML)."""
    text = json.dumps(job_json_schema(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        _stderr().print(f"wrote {escape(str(output))}")


@contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if value is not None:
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


@app.command()
def demo(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output directory [default: ./demo-output].",
                                                   show_default=False)] = None,
    debug: DebugOpt = False, verbose: VerboseOpt = False, progress: ProgressOpt = True,
) -> None:
    """Generate the synthetic demo data (first run only) and run the demo job (configs/demo.yaml)."""
    from flows.demo import demo_job_path, ensure_synthetic

    with _handled(debug), _env("GMM_STREAM_DEMO_DIR", None if output is None else str(output.absolute())):
        path = demo_job_path()
        spec = load_job(path)
        if ensure_synthetic(spec):
            _stderr().print(f"generated the demo data: {escape(spec.source.path)}")
        summary = run_job(spec, path, [], verbose=verbose, progress=progress)
        _print_summary(summary)
        _stdout().print(f"read the report: {escape(str(Path(summary['report']) / 'summary.md'))} "
                        "(plots: lower_bound.png, clusters_pc.png)")


@app.command()
def serve(
    job: JobArg,
    cron: Annotated[str, typer.Option("--cron", help='Schedule, e.g. "0 2 * * *" (every night at 02:00).')],
    name: Annotated[Optional[str], typer.Option("--name", help="Deployment name [default: the job's name].",
                                                show_default=False)] = None,
    timezone: Annotated[Optional[str], typer.Option("--timezone", help="Time zone of the schedule, e.g. Europe/Paris.",
                                                    show_default=False)] = None,
    set_: SetOpt = None, debug: DebugOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Serve the job as a Prefect deployment on a cron schedule (runs until interrupted)."""
    with _handled(debug):
        spec = load_job(job, set_ or [])
        _prefect_env()
        from prefect import serve as prefect_serve
        from prefect.schedules import Cron
        from prefect.types.entrypoint import EntrypointType

        flow = _flow_for(spec.flow)
        deployment = flow.to_deployment(
            name=name or spec.name,
            schedules=[Cron(cron, timezone=timezone) if timezone else Cron(cron)],
            parameters={"job_path": str(job.absolute()), "overrides": list(set_ or []),
                        "working_directory": os.getcwd()},
            entrypoint_type=EntrypointType.MODULE_PATH,
            tags=["gmm-stream"],
            description=spec.description or f"gmm-stream job {job}",
        )
        err = _stderr()
        if _api_url() is None:
            err.print("[yellow]warning[/]: PREFECT_API_URL is not set: the deployment lives in a temporary server "
                      "that stops with this command (start one with `prefect server start`)")
        err.print(f"serving deployment {flow.name}/{escape(deployment.name)} on schedule '{cron}'"
                  f"{f' ({timezone})' if timezone else ''}; Ctrl-C to stop")
        with _console_logging(err, verbose):
            prefect_serve(deployment, print_starting_message=verbose)


def main() -> None:  # pragma: no cover - console entry point alternative
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
