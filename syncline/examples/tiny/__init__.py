"""The smallest live example (``syncline demo tiny``): app.py, templates/, static/."""
