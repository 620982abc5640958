"""Ctrl-C in a terminal during ``gmm-stream run``: exit 130 within 5 s, one line, no server left.

Each test runs the real CLI in a pseudo-terminal (``pty.fork``: the run is the session
leader and the terminal's foreground process group), with nothing configured (no
``PREFECT_API_URL``: the CLI starts its temporary local Prefect server), and sends SIGINT
to the whole foreground process group, as the terminal does on Ctrl-C. The tests share
one fresh PREFECT_HOME, in file order: the first interrupts the very first server start
(database migrations), the next ones start a server on that same database.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from flows_testing import BIN, checkpoint_iteration, small_data, write_job, write_parquet

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240),
              pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals")]

EXIT_WITHIN = 5.0  # seconds from Ctrl-C to the exit of the run
MAX_ITER = 100_000  # with tol 0: EM runs until interrupted


class Terminal:
    """``gmm-stream ARGS`` in a pseudo-terminal; its output is read continuously."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: session leader, the terminal's foreground group
            try:
                os.chdir(cwd)
                os.execve(str(BIN / "gmm-stream"), ["gmm-stream", *args], env)
            finally:
                os._exit(127)
        self.chunks: list[bytes] = []
        self.descendants: dict[int, psutil.Process] = {}
        self.status: int | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO: the terminal's last user exited
                return
            if not data:
                return
            self.chunks.append(data)

    @property
    def output(self) -> str:
        text = b"".join(self.chunks).decode(errors="replace")
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # without colours and cursor moves

    def poll(self) -> int | None:
        """The exit code, once exited; meanwhile, remember every descendant process."""
        if self.status is None:
            try:
                for child in psutil.Process(self.pid).children(recursive=True):
                    self.descendants.setdefault(child.pid, child)
            except psutil.Error:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.poll() is not None:
                raise AssertionError(f"{what}: the run exited with {self.status}\n{self.output[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.output[-3000:]}")
            time.sleep(0.05)

    def ctrl_c(self) -> None:
        """SIGINT to the terminal's foreground process group (what the terminal sends on Ctrl-C)."""
        self.poll()
        os.killpg(os.getpgid(self.pid), signal.SIGINT)

    def wait_exit(self, timeout: float) -> tuple[int | None, float]:
        start = time.monotonic()
        while self.poll() is None and time.monotonic() - start < timeout:
            time.sleep(0.02)
        return self.status, time.monotonic() - start

    def kill(self) -> None:
        """Leave nothing behind (a failed test)."""
        for proc in self.descendants.values():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        self.reader.join(5)
        os.close(self.fd)


def servers(home: Path) -> list[psutil.Process]:
    """Running Prefect servers whose PREFECT_HOME is ``home`` (whoever their parent is now)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if proc.info["status"] == psutil.STATUS_ZOMBIE or "server" not in cmdline:
                continue
            if ("prefect" in cmdline or "uvicorn" in cmdline) and proc.environ().get("PREFECT_HOME") == str(home):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def alive(procs) -> list[str]:
    out = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{proc.pid}: {' '.join(proc.cmdline())}")
        except psutil.Error:
            continue
    return out


@pytest.fixture(scope="module")
def workdir():
    """A job whose EM runs until interrupted, and a fresh PREFECT_HOME shared by the tests."""
    root = Path(tempfile.mkdtemp(prefix="gmm-stream-sigint-"))
    data = small_data(n=3000, d=3, k=3, seed=0)
    write_parquet(root / "data.parquet", data.X, data.ids)
    write_job(root / "job.yaml", {
        "name": "sigint", "flow": "fit",
        "source": {"format": "parquet", "path": str(root / "data.parquet"), "selection": {"id_column": "sample_id"},
                   "chunk_rows": 1000},
        "model": {"n_components": 3, "covariance_type": "full", "tol": 0.0, "max_iter": MAX_ITER, "random_state": 0},
        "output": {"directory": str(root / "out"), "sinks": [{"format": "parquet", "path": "p.parquet"}]},
        "checkpoint": {"every": 1},
    })
    (root / "home").mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def terminal(workdir):
    """Start ``gmm-stream run job.yaml [ARGS]`` in a terminal; kill what is left at the end."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILES_PATH")}
    env.update(PREFECT_HOME=str(workdir / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               TERM="xterm-256color", COLUMNS="200", LINES="40")
    started: list[Terminal] = []

    def start(*extra: str) -> Terminal:
        term = Terminal(["run", str(workdir / "job.yaml"), *extra], env, workdir)
        started.append(term)
        return term

    yield start
    for term in started:
        term.kill()
    for proc in servers(workdir / "home"):
        proc.kill()


def assert_interrupted(term: Terminal, home: Path, status: int | None, took: float, grace: float = 0.2) -> None:
    """Exit 130 within 5 s, one ``interrupted`` line, and (within ``grace`` s) no server left."""
    print(f"exit {status}, {took:.2f} s after Ctrl-C")
    assert status == 130, f"exit {status} after {took:.1f} s\n{term.output[-3000:]}"
    assert took < EXIT_WITHIN, f"exited after {took:.1f} s\n{term.output[-3000:]}"
    out = term.output
    assert out.count("interrupted") == 1 and "error" not in out and "Traceback" not in out, out[-3000:]
    deadline = time.monotonic() + grace
    while (alive(term.descendants.values()) or servers(home)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(term.descendants.values()), alive(term.descendants.values())
    assert not servers(home), alive(servers(home))


def iteration(term: Terminal) -> int:
    done = re.findall(rf"(\d+)/{MAX_ITER} EM iterations", term.output)
    return int(done[-1]) if done else 0


def test_ctrl_c_while_the_server_starts(terminal, workdir):
    home = workdir / "home"
    term = terminal()
    term.wait_for(lambda: "starting Prefect's temporary local server" in term.output, 60, "the server start")
    # the first start on this PREFECT_HOME: interrupt it while it creates the database
    term.wait_for(lambda: (home / "prefect.db").exists(), 60, "the server's database")
    assert servers(home), "no Prefect server process found"
    term.ctrl_c()
    status, took = term.wait_exit(30)
    assert_interrupted(term, home, status, took)
    assert "EM iterations" not in term.output


def test_ctrl_c_during_em_leaves_a_checkpoint(terminal, workdir):
    term = terminal()
    term.wait_for(lambda: iteration(term) >= 3, 150, "EM iteration 3")
    term.ctrl_c()
    status, took = term.wait_exit(30)
    assert_interrupted(term, workdir / "home", status, took)
    checkpoints = [checkpoint_iteration(state.parent.parent) for state in (workdir / "out").rglob("state/state.json")]
    assert max(checkpoints, default=0) >= 3, checkpoints  # what the next run resumes from


def test_a_second_ctrl_c_exits_at_once_and_the_run_resumes(terminal, workdir):
    # after the previous test, the run resumes from its checkpoint (run alone: starts afresh)
    resumes = any((workdir / "out").rglob("state/state.json"))
    term = terminal()
    term.wait_for(lambda: iteration(term) > 0 and (not resumes or "resumed at iteration" in term.output), 150,
                  "EM resumed from the checkpoint" if resumes else "EM")
    term.ctrl_c()
    time.sleep(0.05)  # the first Ctrl-C is being handled (the crash reported to the server)
    term.ctrl_c()
    status, took = term.wait_exit(30)
    # the server was told to stop, not waited for: it goes once the run's connections close
    assert_interrupted(term, workdir / "home", status, took, grace=3.0)
    assert took < 1.5, f"the second Ctrl-C: exited after {took:.1f} s"


def test_a_run_with_nothing_configured_completes_and_stops_its_server(terminal, workdir):
    term = terminal("--set", "model.max_iter=3", "--set", f"output.directory={workdir / 'done'}")
    status, took = term.wait_exit(150)
    assert status == 0, f"exit {status}\n{term.output[-3000:]}"
    assert "gmm-stream fit: sigint" in term.output and "not converged after 3 iterations" in term.output
    assert (workdir / "done" / "p.parquet").exists()
    time.sleep(0.2)
    assert term.descendants and not alive(term.descendants.values()), alive(term.descendants.values())
    assert not servers(workdir / "home"), alive(servers(workdir / "home"))
