"""Command lines in fresh processes without paying the imports each time: a fork server for the tests.

`python -m pipelines.cli.train ...` spends ~10 s of CPU importing JAX, Flax, Orbax, Grain, transformers (and the
torch it pulls in) before it reads a flag; the suite starts ~130 such processes, most of which stop in the first
second after the imports (the fault table). Here one server process per test worker imports those libraries once,
without starting a JAX backend, and forks a child per command line. The child is the command line as `-m` runs it:
its own process (own pid, exit status, signals: `debug_kill_at` SIGKILLs it), its own cwd, environment, stdout and
stderr, the module run as `__main__` by `runpy`, and the interpreter's exit less its module teardown (`_become`).
The JAX backend, the devices (XLA_FLAGS) and the compilation cache start in the child, from its environment.

What the child inherits instead of re-importing: modules imported at the server's start, with the environment of
that moment (the test session's: JAX_PLATFORMS=cpu, the compilation cache). A command line whose JAX_* variables
differ from the server's is refused (JAX reads them at import); it needs a plain subprocess.

Protocol (JSON lines): the client writes {"id", "module", "args", "cwd", "env", "stdout", "stderr"}; the server
answers {"id", "pid"} once the child runs and {"id", "status", "waited"} once it has exited: status as Popen's
returncode (-N: killed by signal N), waited = seconds its main thread sat runnable in the run queue
(/proc/<pid>/schedstat, read before the child is reaped).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what every command line imports before it reads its flags (the entry modules themselves define flags, so the
# child imports them: defining a flag twice is an error)
PRELOAD = ("jax", "jax.numpy", "flax.nnx", "optax", "orbax.checkpoint", "grain", "transformers",
           "transformers.models.auto.tokenization_auto", "ml_collections.config_flags", "insightv_jax.train.loop",
           "insightv_jax.eval.runner", "insightv_jax.checkpoints", "data_gen.pipeline", "pipelines.cli._app",
           "pipelines.cli._inputs", "pipelines.grpo", "pipelines.iterative_dpo")


# ------------------------------------------------------------------------------------------------ the server

def _serve() -> dict | None:
  """The server loop; returns the request in a forked child (which then runs it), None when stdin closes."""
  import importlib
  sys.path[0] = ROOT  # as `python -m` from ROOT: the repository, not tests/, comes first
  for name in PRELOAD:
    importlib.import_module(name)
  from jax._src import xla_bridge
  assert not xla_bridge._backends, "a preloaded module started a JAX backend: forks would share it"
  assert threading.active_count() == 1, f"a preloaded module started threads: {threading.enumerate()}"
  sys.stdout.flush()
  sys.stderr.flush()
  os.write(1, b'{"ready": true}\n')
  children, pending = {}, b""
  while True:
    readable, _, _ = select.select([0], [], [], 0.05)
    if readable:
      chunk = os.read(0, 1 << 16)
      if not chunk:
        break
      pending += chunk
      while b"\n" in pending:
        line, pending = pending.split(b"\n", 1)
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
          return request
        children[pid] = request["id"]
        os.write(1, json.dumps({"id": request["id"], "pid": pid}).encode() + b"\n")
    _report_exited(children)
  while children:  # stdin closed: let the running children finish
    _report_exited(children)
    time.sleep(0.05)
  return None


def _report_exited(children: dict) -> None:
  while children:
    info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if info is None or info.si_pid == 0:
      return
    waited = _run_queue_seconds(info.si_pid)  # exited, not yet reaped: /proc/<pid> is still there
    _, raw = os.waitpid(info.si_pid, 0)
    status = -os.WTERMSIG(raw) if os.WIFSIGNALED(raw) else os.WEXITSTATUS(raw)
    os.write(1, json.dumps({"id": children.pop(info.si_pid), "status": status, "waited": waited}).encode() + b"\n")


def _run_queue_seconds(pid: int) -> float:
  try:
    with open(f"/proc/{pid}/schedstat") as f:
      return int(f.read().split()[1]) / 1e9
  except (OSError, IndexError, ValueError):  # no schedstat: count the whole wall time
    return 0.0


def _become(request: dict) -> None:
  """In the forked child: the command line's cwd, environment and files, then the module as `python -m` runs it,
  and the interpreter's exit: non-daemon threads joined, atexit handlers run, stdio flushed, the status of
  SystemExit or 1 after an uncaught exception's traceback. What it skips is the teardown of every module and
  object (2.4 s of CPU with JAX and torch loaded): what a command line writes is closed before it exits anyway."""
  import atexit
  import runpy
  import traceback
  os.chdir(request["cwd"])
  os.environ.clear()
  os.environ.update(request["env"])
  for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                          (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
    new = os.open(path, flags, 0o644)
    os.dup2(new, fd)
    os.close(new)
  sys.argv = [request["module"], *request["args"]]
  status = 0
  try:
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
  except SystemExit as e:
    status = _exit_status(e.code)
  except BaseException:  # noqa: BLE001 - as the interpreter reports an uncaught exception
    traceback.print_exc()
    status = 1
  try:
    threading._shutdown()  # joins the non-daemon threads, as the interpreter does before atexit
    atexit._run_exitfuncs()
  finally:
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except (OSError, ValueError):
        pass
    os._exit(status)


def _exit_status(code) -> int:
  if code is None:
    return 0
  if isinstance(code, int):
    return code & 0xFF
  print(code, file=sys.stderr)
  return 1


# ------------------------------------------------------------------------------------------------ the client

class ForkServer:
  """Starts command lines (`python -m <module> <args>`) as children of one preloaded server process.

  Thread-safe: several command lines may run at once (two processes of one distributed job, the fault table's
  workers)."""

  def __init__(self, env: dict | None = None):
    self.env = dict(os.environ if env is None else env)
    self._proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)], cwd=ROOT, env=self.env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    first = self._proc.stdout.readline()
    if json.loads(first or b"{}").get("ready") is not True:
      raise RuntimeError(f"the fork server did not start (it said {first!r}); its stderr is the test's")
    self._lock, self._next, self._replies = threading.Lock(), 0, {}
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self._proc.stdout:
      reply = json.loads(line)
      with self._lock:
        slot = self._replies[reply["id"]]
      key = "pid" if "pid" in reply else "exit"
      slot[key] = reply
      slot[key + "_event"].set()
    with self._lock:  # the server is gone: wake every waiter
      for slot in self._replies.values():
        slot.setdefault("exit", {"status": None, "waited": 0.0})
        slot["pid_event"].set()
        slot["exit_event"].set()

  def start(self, module: str, args, *, cwd: str = ROOT, env: dict | None = None, stdout: str = os.devnull,
            stderr: str = os.devnull) -> "Child":
    env = dict(self.env if env is None else env)
    differ = sorted(k for k in set(env) | set(self.env) if k.startswith("JAX_") and env.get(k) != self.env.get(k))
    if differ:
      raise ValueError(f"{differ} differ from the fork server's environment (JAX reads them at import): use a "
                       "plain subprocess for this command line")
    with self._lock:
      self._next += 1
      rid = self._next
      slot = self._replies[rid] = {"pid_event": threading.Event(), "exit_event": threading.Event()}
      request = {"id": rid, "module": module, "args": [str(a) for a in args], "cwd": str(cwd), "env": env,
                 "stdout": str(stdout), "stderr": str(stderr)}
      self._proc.stdin.write(json.dumps(request).encode() + b"\n")
      self._proc.stdin.flush()
    t0 = time.time()
    slot["pid_event"].wait()
    if "pid" not in slot:
      raise RuntimeError("the fork server exited before it started the command line")
    return Child(slot, slot["pid"]["pid"], t0, str(stdout), str(stderr))

  def run(self, module: str, args, *, cwd: str = ROOT, env: dict | None = None, timeout: float = 600,
          workdir: str) -> subprocess.CompletedProcess:
    """Like subprocess.run(capture_output=True, text=True): stdout and stderr go through files in `workdir`."""
    os.makedirs(workdir, exist_ok=True)
    n = len([f for f in os.listdir(workdir) if f.startswith("cli-") and f.endswith(".stderr")])
    out, err = (os.path.join(workdir, f"cli-{n}.{s}") for s in ("stdout", "stderr"))
    child = self.start(module, args, cwd=cwd, env=env, stdout=out, stderr=err)
    status = child.wait(timeout)
    return subprocess.CompletedProcess([module, *args], status, child.read_stdout(), child.read_stderr())

  def close(self):
    if self._proc.poll() is None:
      self._proc.stdin.close()
      try:
        self._proc.wait(timeout=60)
      except subprocess.TimeoutExpired:
        self._proc.kill()


class Child:
  """A command line the fork server started: `pid`, `wait(timeout)` -> status, `seconds` / `wall` once done."""

  def __init__(self, slot, pid, t0, stdout, stderr):
    self._slot, self.pid, self._t0, self.stdout, self.stderr = slot, pid, t0, stdout, stderr
    self.status = self.wall = self.seconds = None

  def wait(self, timeout: float | None = None) -> int:
    """Exit status (-N: killed by signal N); SIGKILLs the child past `timeout` seconds and returns -9."""
    if not self._slot["exit_event"].wait(timeout):
      self.kill()
      self._slot["exit_event"].wait()
    reply = self._slot["exit"]
    if reply["status"] is None:
      raise RuntimeError("the fork server exited while the command line ran")
    self.status, self.wall = reply["status"], time.time() - self._t0
    self.seconds = self.wall - reply["waited"]  # less the time it waited for a CPU
    return self.status

  def kill(self):
    try:
      os.kill(self.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass

  def read_stdout(self) -> str:
    return _read(self.stdout)

  def read_stderr(self) -> str:
    return _read(self.stderr)


def _read(path: str) -> str:
  if path == os.devnull:
    return ""
  with open(path, errors="replace") as f:
    return f.read()


if __name__ == "__main__":
  _request = _serve()
  if _request is not None:
    _become(_request)
