"""``pathfm train``: DINO training in this process, or several processes under ``accelerate launch``.

    pathfm train [preset] [--flags]                                   # = python training/dino.py ...
    pathfm train --num_processes 2 [--main_process_port P] [preset] [--flags]
        # = accelerate launch --multi_gpu --num_processes 2 training/dino.py ... (ACCELERATE_USE_CPU=true
        #   when there is no GPU), with a mistake reported as one line, printed once and last

With ``--num_processes N`` (N > 1), the arguments are parsed and checked here first (preset, flags, crop sizes,
value ranges: what ``training/dino.py`` checks before opening a slide), so such a mistake is one line and
exit status 2 before any process starts. A mistake only the run finds (a truncated weights file, nothing to
resume) is reported by rank 0 through torch elastic's error file (``training/user_error.py``) and printed by
the launcher in its failure report, after everything else; here the launcher's stderr is passed through
live except that line, which is printed once more, alone, as the last line, and the exit status is 2.

Other ``accelerate launch`` options (several machines, a config file) are for ``accelerate launch
training/dino.py`` itself, which stays the documented command.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys

__all__ = ["ERROR_PREFIX", "launch_command", "main", "split_launch_args"]

ERROR_PREFIX = "training/dino.py: error: "
"""How ``training/dino.py`` starts its one-line error (``dino.cli``)."""

LAUNCH_FLAGS = ("--num_processes", "--main_process_port")
"""``accelerate launch`` options ``pathfm train`` takes (each with an integer value)."""


def split_launch_args(argv: list[str]) -> tuple[dict[str, int], list[str]]:
    """Separate :data:`LAUNCH_FLAGS` (``--flag N`` or ``--flag=N``) from the training arguments.

    Returns:
        ``({"num_processes": N, ...}, training arguments in their order)``.

    Raises:
        ValueError: a launch flag without an integer value.
    """
    launch: dict[str, int] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, _, inline = arg.partition("=")
        if name in LAUNCH_FLAGS:
            value = inline if inline else (argv[i + 1] if i + 1 < len(argv) else "")
            i += 1 if inline else 2
            if not value.isdigit():
                raise ValueError(f"{name} needs a whole number, got {value!r} (e.g. {name} 2)")
            launch[name[2:]] = int(value)
            continue
        rest.append(arg)
        i += 1
    return launch, rest


def launch_command(launch: dict[str, int], train_args: list[str]) -> list[str]:
    """The ``accelerate launch`` command line for ``launch["num_processes"]`` processes on this machine."""
    script = importlib.util.find_spec("pathfm.training.dino").origin
    command = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--multi_gpu"]
    command += ["--num_processes", str(launch["num_processes"]), "--num_machines", "1"]
    # the run chooses its precision itself (--mixed_precision of training/dino.py); these only silence the
    # launcher's "values were not passed" notice
    command += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    if "main_process_port" in launch:
        command += ["--main_process_port", str(launch["main_process_port"])]
    return [*command, script, *train_args]


class _HoldBackOurLine:
    """Copies a byte stream to stderr live, except lines holding :data:`ERROR_PREFIX` (kept in :attr:`lines`)."""

    def __init__(self) -> None:
        self.pending = b""
        self.lines: list[str] = []
        self.marker = ERROR_PREFIX.encode()

    def feed(self, chunk: bytes) -> None:
        *complete, self.pending = (self.pending + chunk).split(b"\n")
        for line in complete:
            self._line(line)
        # a partial line (a progress bar redrawn with \r) goes out at once, unless it may hold our line
        if self.marker not in self.pending:
            keep = len(self.marker) - 1
            out, self.pending = self.pending[:-keep], self.pending[-keep:]
            self._write(out)

    def close(self) -> None:
        if self.pending:
            self._line(self.pending)
            self.pending = b""

    def _line(self, line: bytes) -> None:
        at = line.find(self.marker)
        if at < 0:
            self._write(line + b"\n")
            return
        ours = line[at:].decode(errors="replace").rstrip()
        if ours not in self.lines:
            self.lines.append(ours)

    @staticmethod
    def _write(data: bytes) -> None:
        if data:
            sys.stderr.buffer.write(data)
            sys.stderr.flush()


def run_launcher(command: list[str], env: dict[str, str]) -> int:
    """Run ``command``, stream its stderr (our line held back), print our line last.

    Returns:
        2 when training reported a mistake, else the launcher's exit status.
    """
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    # Ctrl-C reaches the launcher and the workers from the terminal (one process group) and they stop
    # cleanly; this process only waits. SIGTERM (SLURM, kill) is passed on to the launcher.
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda signum, _: proc.send_signal(signum)),
    }
    relay = _HoldBackOurLine()
    try:
        while chunk := os.read(proc.stderr.fileno(), 65536):
            relay.feed(chunk)
        relay.close()
        status = proc.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for line in relay.lines:
        print(line, file=sys.stderr, flush=True)
    return 2 if relay.lines else status


def main(argv: list[str]) -> int:
    """``pathfm train [--num_processes N] [--main_process_port P] [preset] [--flags]``; the exit status."""
    try:
        launch, train_args = split_launch_args(argv)
    except ValueError as err:
        print(f"pathfm train: error: {err}", file=sys.stderr)
        return 2
    if launch.get("num_processes", 1) <= 1:
        from pathfm.modeling import register_auto_classes
        from pathfm.training.dino import cli

        register_auto_classes()  # as `import pathfm` does for python training/dino.py
        return cli(train_args)
    from pathfm.training.config import parse_config

    try:
        parse_config(list(train_args))  # every check that needs no slide and no model, before any launch
    except (ValueError, FileNotFoundError) as err:
        print(f"{ERROR_PREFIX}{err}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if "ACCELERATE_USE_CPU" not in env:
        import torch

        if not torch.cuda.is_available():
            env["ACCELERATE_USE_CPU"] = "true"  # several CPU processes (gloo), as README's 2-process example
    return run_launcher(launch_command(launch, train_args), env)
