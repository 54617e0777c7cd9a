"""The demo app (docker/demo-app/app.py) as it is run mounted under a path
prefix behind tlsfront (`strip_prefix = true`).

The demo app wraps itself in ProxyFix(x_for=1, x_proto=1, x_host=1, x_port=1);
here that ProxyFix is replaced by one that also honours X-Forwarded-Prefix
when X_PREFIX=1 (Werkzeug then puts the prefix into SCRIPT_NAME, so
url_for() builds /admin/... URLs). With X_PREFIX=0 the app knows nothing of
its mount point: every URL and cookie path it builds lacks the prefix, and
only tlsfront's rewriting of Location and Set-Cookie Path puts it back.

Environment: as the demo app (HOST, PORT, SECRET_KEY, DEMO_USER,
DEMO_PASSWORD), plus X_PREFIX=0|1.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from werkzeug.middleware.proxy_fix import ProxyFix

DEMO = Path(__file__).resolve().parents[2] / "docker" / "demo-app" / "app.py"

_spec = importlib.util.spec_from_file_location("demo_app", DEMO)
assert _spec is not None and _spec.loader is not None, f"cannot load {DEMO}"
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)
app = demo.app

# The demo's own ProxyFix is the outermost WSGI layer; keep what it wraps.
inner = app.wsgi_app.app if isinstance(app.wsgi_app, ProxyFix) else app.wsgi_app
x_prefix = 1 if os.environ.get("X_PREFIX", "1") == "1" else 0
app.wsgi_app = ProxyFix(inner, x_for=1, x_proto=1, x_host=1, x_port=1, x_prefix=x_prefix)

if __name__ == "__main__":
    app.run(
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        threaded=True,
        debug=False,
        use_reloader=False,
    )
