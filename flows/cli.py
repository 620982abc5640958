"""The ``gmm-stream`` command line: run, validate, schema, demo, serve.

Exit codes: 0 success; 1 the run failed; 2 the job file is missing or invalid (or a
usage error); 130 interrupted. A failure prints one line per problem (``error: ...``),
with the traceback only under ``--debug``.

Prefect is imported only by the commands that run flows, after this module has set
``PREFECT_SERVER_ANALYTICS_ENABLED=false``, ``DO_NOT_TRACK=1`` (client telemetry) and
``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=90`` as defaults.

With no ``PREFECT_API_URL`` configured, ``run`` and ``demo`` start a temporary local
Prefect server themselves (nothing to set up): ``prefect server start`` on a free port of
127.0.0.1, in its own session so that the terminal's Ctrl-C (sent to the whole foreground
process group) does not kill it under the run, without the UI and without the services a
single run does not need (scheduler, late runs, foreman, ...). It starts while this
process imports the flows, gets ``PREFECT_API_URL`` for the run, and is stopped when the
process exits (on Linux also if the process is killed). Prefect's own temporary server is
not used: it starts in the terminal's process group and offers no way to change that.

Ctrl-C: the flow reports the crash to the (still running) server and the command exits
130 after one ``interrupted`` line, leaving the checkpoint in place for the next run; a
second Ctrl-C exits at once.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows import FLOWS
from flows.config import Job, job_json_schema, load_job
from flows.exceptions import ConfigError, FlowError, JobNotFoundError

__all__ = ["app", "main"]

EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 1, 2, 130
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",  # Prefect's client-side (SDK) telemetry
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}
# The temporary server's environment (unless already set): no UI, no service a single
# run needs (the scheduler, late runs, foreman, pause expirations, cancellation cleanup,
# repossessor, cleanup reconciler, database vacuum). What Prefect's own temporary server
# runs stays on: the task run recorder, the event persister, triggers and actions.
SERVER_DEFAULTS = {
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    **{f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in (
        "SCHEDULER", "LATE_RUNS", "FOREMAN", "PAUSE_EXPIRATIONS", "CANCELLATION_CLEANUP", "REPOSSESSOR",
        "CLEANUP_RECONCILER", "DB_VACUUM")},
}

app = typer.Typer(
    name="gmm-stream",
    help="Gaussian mixture models on Dask, run as Prefect flows described in YAML jobs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JobArg = Annotated[Path, typer.Argument(help="The YAML job file.", show_default=False)]
SetOpt = Annotated[list[str] | None, typer.Option(
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
    _interrupts.said = False
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
        _interrupts.say(err)
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


# ------------------------------------------------------------ Ctrl-C and the local server


class _Interrupts:
    """SIGINT for a run: the first raises KeyboardInterrupt, the next ends the process at once.

    The first Ctrl-C unwinds the flow (Prefect reports the crash, the progress bar stops,
    ``_handled`` prints ``interrupted``); a Ctrl-C during that cleanup, or while the
    process is exiting (Prefect draining its logs and events, the server stopping), stops
    the server without waiting and exits 130 at once.
    """

    def __init__(self) -> None:
        self.count = 0
        self.exiting = False
        self.said = False
        self.installed = False
        self.previous: Any = None

    def say(self, err: Console | None = None) -> None:
        if not self.said:
            self.said = True
            (err or _stderr()).print("[yellow]interrupted[/]")

    def begin(self) -> bool:
        """A run starts: take SIGINT (main thread only); True if this call installed the handler."""
        self.count, self.exiting = 0, False
        if self.installed or threading.current_thread() is not threading.main_thread():
            return False
        self.previous = signal.signal(signal.SIGINT, self._handler)
        self.installed = True
        return True

    def restore(self) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, self.previous if self.previous is not None else signal.default_int_handler)
            self.installed = False

    def _handler(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count == 1 and not self.exiting:
            raise KeyboardInterrupt
        try:  # a second Ctrl-C, or one while exiting: no more waiting
            if sys.stderr.isatty():
                sys.stderr.write("\x1b[?25h\n")  # the progress bar hid the cursor
            self.say()
            sys.stderr.flush()
            if _LocalServer.current is not None:
                _LocalServer.current.hurry()
        finally:
            os._exit(EXIT_INTERRUPTED)


_interrupts = _Interrupts()


class ServerStartError(FlowError, RuntimeError):
    """The temporary local Prefect server did not start."""


# ``python -c`` this, then Prefect's CLI: on Linux, the server gets SIGTERM if the gmm-stream
# process dies without stopping it (PR_SET_PDEATHSIG: killed, crashed), so it is never left behind.
_SERVER_LAUNCHER = (
    "import ctypes, os, runpy, sys\n"
    "try: ctypes.CDLL(None).prctl(1, 15)\n"  # prctl(PR_SET_PDEATHSIG, SIGTERM)
    "except Exception: pass\n"
    "if os.getppid() != int(sys.argv.pop(1)): sys.exit(0)\n"
    "sys.argv[0] = 'prefect'; runpy.run_module('prefect', run_name='__main__', alter_sys=True)"
)


class _LocalServer:
    """A temporary ``prefect server start`` for this process, in its own session.

    In its own session the server does not get the terminal's SIGINT (nor SIGHUP): a
    Ctrl-C interrupts the flow only, which still reaches the server to report the crash.
    The server stops when the process exits (:func:`atexit`): SIGTERM, then SIGKILL; on
    Linux also when the process is killed (``PR_SET_PDEATHSIG``, see ``_SERVER_LAUNCHER``).
    """

    current: _LocalServer | None = None
    PORT_RETRIES = 3

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log: Any = None  # the server's output: an anonymous temporary file (nothing left behind)
        self.ready = False
        self.started_at = 0.0
        self._old_url: str | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        """Start the server process (returns at once: see :meth:`wait_ready`)."""
        if self.log is None:
            # kept open for the server's lifetime, closed by stop()
            self.log = tempfile.TemporaryFile(prefix="gmm-stream-prefect-server-")  # noqa: SIM115
        with socket.socket() as sock:  # a free port (taken again in the meantime: retried)
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = {**os.environ, **{k: v for k, v in SERVER_DEFAULTS.items() if k not in os.environ}}
        env.pop("PREFECT_API_URL", None)
        args = [sys.executable, "-c", _SERVER_LAUNCHER, str(os.getpid()),
                "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        self.log.seek(0)
        self.log.truncate()
        self.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.started_at = time.monotonic()
        if _LocalServer.current is None:
            atexit.register(_LocalServer._at_exit)
        _LocalServer.current = self
        if self._old_url is not None:  # restarted (port taken): published again
            self.publish()

    def publish(self) -> None:
        """Make this server Prefect's API for the whole process (and its children)."""
        if self._old_url is None:
            self._old_url = os.environ.get("PREFECT_API_URL", "")
        os.environ["PREFECT_API_URL"] = self.api_url
        _refresh_prefect_settings()

    def wait_ready(self, timeout: float) -> None:
        """Wait until the server answers ``/api/health``; raise :class:`ServerStartError` if not."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1: never a proxy
        retries = 0
        deadline = self.started_at + timeout
        while not self.ready:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = self._output()[-4000:].strip()
                if "already in use" in tail and retries < self.PORT_RETRIES:
                    retries += 1
                    self.start()
                    continue
                code, log = self.proc.returncode, self._save_output()
                self.stop()
                raise ServerStartError(f"Prefect's temporary server exited with code {code} while starting: "
                                       f"{_server_failure(tail)} (its output: {log})")
            try:
                with opener.open(f"{self.api_url}/health", timeout=2) as response:
                    self.ready = response.status == 200
            except OSError:
                pass
            if not self.ready:
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServerStartError(f"Prefect's temporary server did not answer within {timeout:g} s "
                                           f"(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS; its output: "
                                           f"{self._save_output()})")
                time.sleep(0.05)

    def _output(self) -> str:
        try:
            self.log.seek(0)
            return self.log.read().decode(errors="replace")
        except (AttributeError, OSError, ValueError):
            return ""

    def _save_output(self) -> str:
        """The server's output in a file that stays (named in the error)."""
        fd, name = tempfile.mkstemp(prefix="gmm-stream-prefect-server-", suffix=".log")
        with os.fdopen(fd, "w") as out:
            out.write(self._output())
        return name

    def terminate(self, timeout: float) -> None:
        """SIGTERM the server's process group; SIGKILL it if still there after ``timeout`` s."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (getattr(signal, "SIGKILL", signal.SIGTERM), 5.0)):
            try:
                if hasattr(os, "killpg"):
                    os.killpg(proc.pid, sig)  # its session's process group: the server and any child
                else:  # pragma: no cover - Windows
                    proc.terminate() if sig == signal.SIGTERM else proc.kill()
            except (ProcessLookupError, PermissionError):
                return
            end = time.monotonic() + wait
            while proc.poll() is None and time.monotonic() < end:  # poll(): safe in a signal handler
                time.sleep(0.02)
            if proc.returncode is not None:
                return

    def hurry(self) -> None:
        """Stop the server without waiting: SIGTERM (it exits once this process's connections
        close), or SIGKILL while it is still starting (it would finish starting first)."""
        proc = self.proc
        if proc is not None and proc.returncode is None and hasattr(os, "killpg"):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM if self.ready else signal.SIGKILL)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (see :meth:`terminate`), close its output, forget its URL."""
        self.terminate(timeout)
        if self.proc is not None and self.proc.returncode is not None:
            self.proc = None
            if self.log is not None:
                self.log.close()
                self.log = None
        if os.environ.get("PREFECT_API_URL") == self.api_url and self._old_url is not None:
            if self._old_url:
                os.environ["PREFECT_API_URL"] = self._old_url
            else:
                os.environ.pop("PREFECT_API_URL", None)
            self._old_url = None
            _refresh_prefect_settings()
        if _LocalServer.current is self:
            _LocalServer.current = None

    @staticmethod
    def _at_exit() -> None:
        # runs after Prefect has drained its logs and events (threading's exit hooks run first)
        _interrupts.exiting = True  # a Ctrl-C now: no waiting for the server
        server = _LocalServer.current
        if server is not None:
            # interrupted while starting, the server would finish its start-up (the database
            # migrations) before it stops on SIGTERM: not waited for (SQLite rolls back)
            server.stop(timeout=10.0 if not _interrupts.count else 2.0 if server.ready else 0.3)
        if _interrupts.count:
            # interrupted: the interpreter's final garbage collections over Prefect, Dask and
            # numba's objects take 1-2 s; their memory is the system's to free
            gc.freeze()


def _server_failure(output: str) -> str:
    """The line of a server's output that says why it failed: its last exception, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"[A-Za-z_][\w.]*(Error|Exception)\b", line)]
    return (errors or lines or ["no output"])[-1]


def _refresh_prefect_settings() -> None:
    """Let Prefect see a changed ``PREFECT_API_URL`` (its settings are read once, at import)."""
    if "prefect.context" not in sys.modules:
        return  # read from the environment at import
    import prefect.context

    refresh = getattr(prefect.context, "refresh_global_settings_context", None)
    if refresh is not None:  # Prefect >= 3.4: "refresh the global settings context to pick up
        refresh()            # environment variable changes"


def _startup_timeout() -> float:
    try:
        return float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90"))
    except ValueError:
        return 90.0


def _local_server(err: Console) -> _LocalServer | None:
    """None if a Prefect API is configured; else our temporary server, starting (not ready yet)."""
    current = _LocalServer.current
    if current is not None:  # started by an earlier run of this process
        if current.proc is not None and current.proc.poll() is None:
            return current
        current.stop()  # it died: forget it
    if os.environ.get("PREFECT_API_URL"):
        return None
    server = _LocalServer()
    server.start()  # first, so that it starts while Prefect's settings are imported and read
    if _api_url():  # set in a profile, prefect.toml or .env: the server (still importing) goes
        server.stop(timeout=0.0)
        return None
    err.print("starting Prefect's temporary local server (10-20 s the first time)...")
    server.publish()
    return server


@contextmanager
def _serving(server: _LocalServer | None) -> Iterator[None]:
    """Wait for ``server`` to answer, and make it the API of the block."""
    if server is None:
        yield
        return
    server.wait_ready(_startup_timeout())
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # the global settings already point at it; this covers a settings context entered by a caller
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield


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
    # plain lines (the terminal soft-wraps them): a rich log table would fold long paths mid-word
    ours = logging.StreamHandler(console.file)
    ours.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    ours.setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:  # after Ctrl-C, one line: "interrupted" (not the cleanup's warnings)
        ours.addFilter(lambda record: not _interrupts.count)
    names = ("flows", "pipeline", "gmm_stream")
    loggers = [logging.getLogger(n) for n in names]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(ours)
        lg.setLevel(logging.INFO if verbose else logging.WARNING)
        lg.propagate = False  # shown once, here
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if _interrupts.count and not verbose:
            return
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
        if not self.console.is_terminal:  # a log file gets one line per finished fit, nothing else
            if ev.converged or ev.n_iter >= ev.max_iter:
                desc = ev.fit_id + (f" init {ev.init + 1}/{ev.n_init}" if ev.n_init > 1 else "")
                word = "converged" if ev.converged else "stopped (max_iter)"
                self.console.print(f"{desc}: {word} after {ev.n_iter} iterations, lower bound {ev.lower_bound:.8g}")
            return
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
            progress: bool = True, flow_name: str | None = None) -> dict[str, Any]:
    """Run the job's flow (or ``flow_name``) in this process, with progress bars; return the flow's summary.

    Without a configured ``PREFECT_API_URL``, against a temporary local server of ours
    (see the module's docstring), started while the flows are imported.
    """
    from flows.progress import listening

    _prefect_env()
    err = _stderr()
    took_sigint = _interrupts.begin()
    try:
        server = _local_server(err)
        flow = _flow_for(flow_name or job.flow)  # imports Prefect and the flows while the server starts
        with _console_logging(err, verbose), _serving(server):
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
                if not verbose:  # runs before Prefect's own exit hooks (LIFO): no "Stopping ..." INFO lines
                    atexit.register(logging.getLogger("prefect").setLevel, logging.WARNING)
    finally:
        if _LocalServer.current is not None or _interrupts.count:
            _interrupts.exiting = True  # this process goes on to exit: a Ctrl-C ends it at once
        elif took_sigint:
            _interrupts.restore()


def _print_summary(summary: dict[str, Any]) -> None:
    out = _stdout()
    table = Table(title=f"gmm-stream {summary['flow']}: {summary['job']}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # a long path is folded onto more lines, never cut
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
        ("refresh", summary.get("refresh") and "{new} new, {changed} changed, {stale} stalest, {removed} removed "
                                               "partition(s), {rows_read} rows read by EM".format(
            **{k: len(v) if isinstance(v, list) else v for k, v in summary["refresh"].items()})),
        ("model saved", summary["outputs"].get("model") if summary["flow"] != "predict" else None),
        ("predictions", ", ".join(summary["outputs"].get("predictions", [])) or None),
        ("report", summary.get("report")),
    ]
    shown = [(key, str(value)) for key, value in rows if value not in (None, False, "")]
    if not out.is_terminal:  # a log file or a pipe: whole lines, no box to cut them
        out.print(f"gmm-stream {summary['flow']}: {summary['job']}", soft_wrap=True, markup=False)
        for key, value in shown:
            out.print(f"  {key}: {value}", soft_wrap=True, markup=False, highlight=False)
        return
    for key, value in shown:
        table.add_row(key, escape(value))
    out.print(table)


# ----------------------------------------------------------------------------- commands


@app.command()
def run(job: JobArg, set_: SetOpt = None, debug: DebugOpt = False, verbose: VerboseOpt = False,
        progress: ProgressOpt = True) -> None:
    """Run a job's flow locally (Prefect's temporary server unless PREFECT_API_URL is set)."""
    with _handled(debug):
        spec = load_job(job, set_ or [])
        from flows.preflight import preflight

        preflight(spec)
        _print_summary(run_job(spec, job, set_ or [], verbose=verbose, progress=progress))


@app.command()
def update(job: JobArg, set_: SetOpt = None, debug: DebugOpt = False, verbose: VerboseOpt = False,
           progress: ProgressOpt = True) -> None:
    """Refresh the published model of a fit job with the data added since (incremental EM).

    Reads only the input's new and changed partitions (Parquet files, Zarr row chunks),
    keeps the preprocessing of the first run, and publishes a new output set. Without a
    published model it fits from scratch.
    """
    with _handled(debug):
        spec = load_job(job, set_ or [])
        if spec.flow not in ("fit", "update"):
            raise ConfigError(job, [("flow", f"is {spec.flow!r}; `gmm-stream update` refreshes the model of a "
                                             "'fit' or 'update' job")])
        from flows.preflight import preflight

        preflight(spec)
        _print_summary(run_job(spec, job, set_ or [], verbose=verbose, progress=progress, flow_name="update"))


CheckInputsOpt = Annotated[bool, typer.Option(
    "--check-inputs", help="Also check that the inputs exist and open (metadata only) and that no output "
                           "overlaps an input.")]


@app.command()
def validate(job: JobArg, set_: SetOpt = None, check_inputs: CheckInputsOpt = False, debug: DebugOpt = False) -> None:
    """Check a job file (keys, types, values, environment variables) without reading any data.

    With --check-inputs, also what a run checks before it starts (inputs exist, outputs do
    not overlap them) and that the source opens: its shape and features are printed.
    """
    with _handled(debug):
        spec = load_job(job, set_ or [])
        what = {"fit": lambda: f"{spec.model.n_components} components, {spec.model.covariance_type}",
                "select": lambda: f"grid n_components={spec.selection.n_components} x "
                                  f"{spec.selection.covariance_types}, by {spec.selection.criterion.upper()}",
                "predict": lambda: f"model {spec.predict.model}",
                "update": lambda: f"refresh of {spec.model.n_components} components, {spec.model.covariance_type}",
                }[spec.flow]()
        out = _stdout()
        out.print(f"{escape(str(job))}: valid ({spec.flow} flow: {spec.source.format} source "
                  f"{escape(spec.source.path)}; {escape(what)}; output {escape(spec.output.directory)})")
        if check_inputs:
            _check_inputs(spec, out)


def _check_inputs(spec: Job, out: Console) -> None:
    """Preflight, then open the source lazily (metadata only) and describe it."""
    from flows.preflight import preflight
    from pipeline import make_source

    preflight(spec)
    if getattr(spec.source, "synthetic", None) is not None and not os.path.exists(spec.source.path):
        out.print(f"inputs: {escape(spec.source.path)} will be generated (synthetic); outputs do not overlap inputs")
        return
    data = make_source(spec.source.format, spec.source.path, **spec.source.source_options()).open()
    names = [str(v) for v in data.coords["feature"].values] if "feature" in data.coords else []
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
    out.print(f"inputs: {escape(spec.source.path)} opens: {data.shape[0]} rows x {data.shape[1]} features "
              f"({data.dtype}){': ' + escape(shown) if shown else ''}; outputs do not overlap inputs")


@app.command()
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
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
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output directory [default: ./demo-output].",
                                                   show_default=False)] = None,
    debug: DebugOpt = False, verbose: VerboseOpt = False, progress: ProgressOpt = True,
) -> None:
    """Generate the synthetic demo data (first run only) and run the demo job (configs/demo.yaml)."""
    from flows.demo import demo_job_path, ensure_synthetic

    with _handled(debug), _env("GMM_STREAM_DEMO_DIR", None if output is None else str(output.absolute())):
        path = demo_job_path()
        spec = load_job(path)
        from flows.preflight import preflight

        preflight(spec)
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
    name: Annotated[str | None, typer.Option("--name", help="Deployment name [default: the job's name].",
                                                show_default=False)] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", help="Time zone of the schedule, e.g. Europe/Paris.",
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
