"""`noisecraft serve` itself: the command starts uvicorn on 127.0.0.1 and serves the run; bad options are one-line
errors."""

import socket
import subprocess
import sys
import time

import httpx

from noisecraft.cli.main import main


def test_serve_command_starts_a_server(run_dirs):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "noisecraft", "serve", "--checkpoint", str(run_dirs["tiny"]),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, answer = time.monotonic() + 60, None
        while answer is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/sdapi/v1/sd-models", timeout=2).json()
            except httpx.HTTPError:
                time.sleep(0.2)
        assert answer is not None and answer[0]["model_name"] == "mnist-tiny", proc.stdout.read1().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_command_errors(run_dirs, tmp_path, capsys):
    assert main(["serve", "--checkpoint", str(tmp_path / "none")]) == 2
    assert main(["serve", "--checkpoint", str(run_dirs["tiny"]), "--queue", "0"]) == 2
    assert "--queue must be >= 1, got 0" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(run_dirs["tiny"]), "--image-checker", "nomodule"]) == 2
    assert "--image-checker takes MODULE:FUNCTION" in capsys.readouterr().err
