"""The web demo served by ``syncline demo``."""

from .._extras import require

require("syncline demo", "standard", "jinja2", "itsdangerous")
