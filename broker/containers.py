"""The emulator's image in a test, through Testcontainers (`pip install eventgrid-emulator[testcontainers]`):

    with EventGridEmulatorContainer("eventgrid-emulator") as emulator:
        url = emulator.url          # http://127.0.0.1:<mapped port>

It waits for /readyz, the image's own healthcheck. Build the image from a checkout with
`docker build -t eventgrid-emulator -f broker/Dockerfile .`.
"""

from __future__ import annotations

import time
import urllib.request

from testcontainers.core.container import DockerContainer

PORT = 5000


class EventGridEmulatorContainer(DockerContainer):
    def __init__(self, image: str = "eventgrid-emulator", ready_timeout: float = 60.0, **kwargs) -> None:
        super().__init__(image, **kwargs)
        self.ready_timeout = ready_timeout
        self.with_exposed_ports(PORT)

    @property
    def url(self) -> str:
        return f"http://{self.get_container_host_ip()}:{self.get_exposed_port(PORT)}"

    def start(self) -> EventGridEmulatorContainer:
        super().start()
        deadline = time.monotonic() + self.ready_timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                logs = self.get_logs()
                raise RuntimeError(f"the emulator was not ready in {self.ready_timeout} s: {logs!r:.2000}")
            time.sleep(0.2)
