"""The official azure-eventgrid sample programs, fetched and run unchanged.

* `fetch_samples(cache)` downloads the source distribution of the pinned azure-eventgrid
  (requirements/publisher.txt) with `pip download --no-binary :all: --no-deps` once into `cache`
  (outside git: the pytest cache) and extracts its `samples/` folder.
* `cloudevents_v1(cache)` installs cloudevents 1.x (requirements/samples-cncf.txt) into a folder of
  its own: the "cncf" samples and the SDK's support for them import `cloudevents.http`, which the
  cloudevents 2.x pinned for the broker no longer has. Only those samples get it on PYTHONPATH.
* `SampleRun` runs one sample as a child process with the environment variables it reads, in its own
  session (killed at the end if still running), output captured.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.processes import REPO, VENV_PYTHON

SAMPLE_TIMEOUT = 60.0  # the publish_samples sleep up to 3 x 5 s between batches
PIP_TIMEOUT = 300.0


def pinned(requirement_file: Path, package: str) -> str:
    """The version `package==X` is pinned at in a requirements file."""
    match = re.search(rf"^{re.escape(package)}==(\S+)", requirement_file.read_text(), re.MULTILINE)
    assert match, f"{package} is not pinned in {requirement_file}"
    return match.group(1)


def _python() -> str:
    return str(VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable))


def _pip(*args: str) -> None:
    result = subprocess.run([_python(), "-m", "pip", "--disable-pip-version-check", *args],
                            capture_output=True, text=True, timeout=PIP_TIMEOUT)
    assert result.returncode == 0, f"pip {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


def fetch_samples(cache: Path) -> Path:
    """`samples/` of the pinned azure-eventgrid sdist, downloaded and extracted once per cache."""
    version = pinned(REPO / "requirements" / "publisher.txt", "azure-eventgrid")
    target = cache / f"azure-eventgrid-{version}"
    if (target / "samples").is_dir():
        return target / "samples"
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        _pip("download", f"azure-eventgrid=={version}", "--no-binary", ":all:", "--no-deps", "-d", tmp)
        [sdist] = Path(tmp).glob("*.tar.gz")
        with tarfile.open(sdist) as archive:
            members = [m for m in archive.getmembers() if "/samples/" in m.name and (m.isfile() or m.isdir())]
            archive.extractall(tmp, members=members, filter="data")
        [samples] = Path(tmp).glob("*/samples")
        staged = Path(tmp) / "staged"
        staged.mkdir()
        shutil.move(str(samples), staged / "samples")
        staged.rename(target)  # atomic: a half-extracted tree is never taken for a finished one
    return target / "samples"


def cloudevents_v1(cache: Path) -> Path:
    """A folder holding cloudevents 1.x (and its one dependency), for the cncf samples' PYTHONPATH."""
    requirements = REPO / "requirements" / "samples-cncf.txt"
    target = cache / f"cloudevents-{pinned(requirements, 'cloudevents')}"
    if (target / "cloudevents" / "http").is_dir():
        return target
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        staged = Path(tmp) / "site"
        _pip("install", "--no-deps", "--target", str(staged), "-r", str(requirements))
        staged.rename(target)
    return target


@dataclass
class SampleRun:
    """One sample program running as a child process."""

    path: Path
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    output: str = ""
    returncode: int | None = None
    _log: Path | None = field(default=None, repr=False)

    def start(self, log_dir: Path) -> SampleRun:
        self._log = log_dir / (self.path.stem + ".log")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1", **self.env}
        with open(self._log, "wb") as log:
            # cwd is the sample's folder, as when its README says `python sample_x.py`.
            self.proc = subprocess.Popen([_python(), self.path.name], cwd=self.path.parent, env=env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def wait(self, timeout: float = SAMPLE_TIMEOUT) -> SampleRun:
        """Wait for the exit (the process group is killed if it overruns `timeout`)."""
        assert self.proc is not None, "start() first"
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.output = self._read()
            raise AssertionError(f"{self.path.name} did not finish within {timeout} s:\n{self.output}") from None
        self.output = self._read()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait(10)

    def _read(self) -> str:
        return self._log.read_text(errors="replace") if self._log else ""

    def assert_succeeded(self) -> None:
        assert self.returncode == 0, f"{self.path.name} exited with {self.returncode}:\n{self.output}"

    def batch_sizes(self) -> list[int]:
        """What the publish_samples print per batch: "Batch of size N published"."""
        return [int(n) for n in re.findall(r"Batch of size (\d+) published", self.output)]
