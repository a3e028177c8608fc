"""The clinician dashboard: server-rendered pages (Jinja2, htmx), live updates over
Server-Sent Events, charts with uPlot."""
