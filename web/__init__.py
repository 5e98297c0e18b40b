"""The demo web page (``webapp``, ``webapp_page.html``) in front of a served model."""
