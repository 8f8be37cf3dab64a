"""npm packages the tests run (the JavaScript SDK, Azurite), each pinned by a package-lock.json in
its own folder under tests/ and installed with `npm ci` once per lockfile into the pytest cache.
node_modules is never committed and never shared between lockfiles."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

NPM_TIMEOUT = 300.0


def npm_ci(config: pytest.Config, package_dir: Path, marker: str) -> Path:
    """`node_modules` of `package_dir`'s lockfile, installed if the cache lacks `marker` (a path
    under node_modules that exists once the install finished)."""
    for tool in ("node", "npm"):
        assert shutil.which(tool), f"{tool} is not on PATH: tests using {package_dir.name} need Node.js"
    lock = (package_dir / "package-lock.json").read_bytes()
    cache = config.cache.mkdir(f"npm-{package_dir.name}")
    target = cache / hashlib.sha256(lock).hexdigest()[:16]
    if not (target / "node_modules" / marker).exists():
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            staged = Path(tmp) / "install"
            staged.mkdir()
            for name in ("package.json", "package-lock.json"):
                shutil.copy(package_dir / name, staged / name)
            result = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=staged,
                                    capture_output=True, text=True, timeout=NPM_TIMEOUT)
            assert result.returncode == 0, f"npm ci in {package_dir} failed:\n{result.stdout}\n{result.stderr}"
            shutil.rmtree(target, ignore_errors=True)
            staged.rename(target)  # atomic: a half-installed tree is never taken for a finished one
    return target / "node_modules"
