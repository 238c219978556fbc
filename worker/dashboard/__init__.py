"""`flowworker dashboard`: a small server-rendered web app (Starlette,
Jinja2, uvicorn, htmx vendored under static/) over flowworker.ops. It is
the `dashboard` extra: a worker's install does not carry it."""
