"""The smallest live example (``syncline demo tiny``): app.py, templates/, static/."""

from ..._extras import require

require("syncline demo tiny", "standard", "jinja2")
