"""``lightsr serve``: super-resolution over HTTP, with a web page.

:func:`~lightsr.serve.app.create_app` builds the FastAPI application from a
:class:`~lightsr.serve.engine.ModelPool` (the served models, loaded once) and
:class:`~lightsr.serve.app.Limits`; :mod:`lightsr.serve.jobs` queues the work. Needs the
``serve`` extra: ``pip install 'lightsr[serve]'``.
"""
