"""The router's own pages: the dashboard and its JSON API (dashboard, with its CSS, script and
markup in static/), and the error pages (pages)."""
