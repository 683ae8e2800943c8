"""The dashboard at /dashboard: a static page (page.html, app.js, app.css, uPlot in vendor/) that
reads one JSON document (overview.py) every two seconds."""
