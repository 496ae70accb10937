"""A tracking URI MLflow cannot use is a clear error before anything is built or written."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from huscf_lightning.__main__ import main
from huscf_lightning.engine.tracking import TrackingError, check_tracking_uri

TINY = str(Path(__file__).parent / "configs" / "tiny.yaml")


def test_a_sqlite_store_in_a_missing_folder_is_a_clear_error(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrackingError, match="does not exist. Create the folder first"):
        check_tracking_uri(f"sqlite:///{tmp_path / 'no' / 'such' / 'mlflow.db'}")
    check_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")  # a file to be made in an existing folder is fine
    check_tracking_uri("sqlite:///mlflow.db")
    assert main(["fit", "--config", TINY, "--trainer.logger.init_args.tracking_uri=sqlite:///nowhere/mlflow.db"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "Create the folder first" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing was written


class _NotMlflow(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the http.server hook name)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args) -> None:
        """Quiet: the test output is not the place for an access log."""


def test_a_server_that_is_not_mlflow_is_a_clear_error() -> None:
    server = HTTPServer(("127.0.0.1", 0), _NotMlflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(TrackingError, match="answered 404 to MLflow's health check"):
            check_tracking_uri(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
