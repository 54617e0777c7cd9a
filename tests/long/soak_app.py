"""The soak test's app: the Flask demo app (docker/demo-app/app.py) plus an
upload route it lacks. Served by gunicorn (threaded worker) from tests/long:

    gunicorn --chdir tests/long -b 127.0.0.1:PORT --threads 16 soak_app:app

POST /upload  reads the body as it streams and answers
              {"bytes": <length>, "sha256": "<hex digest>"}
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "docker" / "demo-app"))

from flask import jsonify, request  # noqa: E402

from app import app  # noqa: E402


@app.post("/upload")
def upload():
    digest = hashlib.sha256()
    n = 0
    while True:
        chunk = request.stream.read(65536)
        if not chunk:
            break
        digest.update(chunk)
        n += len(chunk)
    return jsonify({"bytes": n, "sha256": digest.hexdigest()})


if __name__ == "__main__":
    # Without gunicorn: Flask's threaded development server.
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), threaded=True, debug=False,
            use_reloader=False)
