"""The serve tests' real server: uvicorn serving an app on 127.0.0.1 at an ephemeral port, in a thread of the test
process (a module of its own name, so tests import it as `from serve_helpers import serve`)."""

import socket
import threading
import time

from noisecraft.serve import ServeConfig, create_app


class Server:
    """uvicorn serving an app in a thread; url is http://127.0.0.1:PORT."""

    def __init__(self, app):
        import uvicorn

        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def close(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.app.state.scheduler.stop()


def serve(models, **config):
    return Server(create_app(models, ServeConfig(**config)))
