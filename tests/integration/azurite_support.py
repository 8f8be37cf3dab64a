"""A real Azurite (Azure's storage emulator, the npm package pinned in tests/azurite/) on loopback:
blob and queue services on free ports, in memory, ended with the test module."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.integration.processes import REPO, free_port
from tests.waiting import wait_until

PACKAGE = REPO / "tests" / "azurite"
ACCOUNT = "devstoreaccount1"
# Azurite's documented development account key (public, the same in every Azurite).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT = 30.0


class Azurite:
    def __init__(self, node_modules: Path, log_path: Path) -> None:
        self.node_modules = node_modules
        self.log_path = log_path
        self.blob_port, self.queue_port, self.table_port = free_port(), free_port(), free_port()
        self.process: subprocess.Popen | None = None

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{ACCOUNT};"
                f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{ACCOUNT};")

    def start(self) -> Azurite:
        args = [str(self.node_modules / ".bin" / "azurite"), "--inMemoryPersistence", "--skipApiVersionCheck", "--loose",
                "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
                "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
                "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port)]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        wait_until(lambda: self.process.poll() is None and self._listening(), START_TIMEOUT, "Azurite listening",
                   diagnostics=self.tail)
        return self

    def _listening(self) -> bool:
        for port in (self.blob_port, self.queue_port):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            except OSError:
                return False
        return True

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
