"""The interactive API documents at /docs: Swagger UI from the copy pinned in the swagger_ui_bundle
package, served by the service itself, never from a CDN (staff paste bearer tokens into this page;
a script swapped on a CDN would read them).

The page loads only the service's own scripts: its Content-Security-Policy allows scripts from the
service alone (no inline script, so the settings live in a file of their own, not in the page).
Served, with /openapi.json, when CLINIC_API_DOCS is on (clinic.config: on in development and test,
off in production unless asked for).
"""

from __future__ import annotations

from flask import Blueprint, Response, send_from_directory, url_for
from markupsafe import escape
from swagger_ui_bundle import swagger_ui_path

# Scripts and styles from the service only. Swagger UI sets style attributes on what it draws, which a
# style-src without 'unsafe-inline' would block; no script runs but the service's own.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# The files of the bundle the page uses; nothing else in the package is served.
SERVED_FILES = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"})

docs = Blueprint("clinic_docs", __name__)

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<title>{title}</title>
<link rel="stylesheet" type="text/css" href="{static}swagger-ui.css">
<link rel="icon" type="image/png" href="{static}favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui" data-spec-url="{spec_url}"></div>
<script src="{static}swagger-ui-bundle.js"></script>
<script src="{start}"></script>
</body>
</html>
"""

# The page's settings, a file rather than an inline script so that the policy can forbid those. The
# service's own document only: no online validator (Swagger UI would send the document to
# validator.swagger.io), no top bar where another document's URL could be typed, and no ?url= or
# ?configUrl= read from the page's address.
_START = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: document.getElementById("swagger-ui").dataset.specUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    queryConfigEnabled: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
};
"""


@docs.route("/docs")
def page():
    from flask import current_app

    static = url_for("clinic_docs.bundle_file", filename="x")[:-1]
    html = _PAGE.format(title=escape(current_app.config.get("API_TITLE", "API")), static=static,
                        spec_url=url_for("api-docs.openapi_json"), start=url_for("clinic_docs.start"))
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


@docs.route("/docs/start.js")
def start():
    return Response(_START, mimetype="text/javascript")


@docs.route("/docs/static/<filename>")
def bundle_file(filename: str):
    if filename not in SERVED_FILES:
        from werkzeug.exceptions import NotFound

        raise NotFound("no such file in the API documents")
    return send_from_directory(swagger_ui_path, filename)
