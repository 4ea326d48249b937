"""Scale-out on Ray Serve with Redis as the shared store (issue 14; README "Scale-out").

``ingress``: the FastAPI app as a stateless Serve deployment, with ``RayEngine`` in place of the
embedded engine; ``runner``: one deployment per endpoint running its pipeline; ``application``:
both wired together, for ``facefoundry serve --engine ray`` and for ``serve run`` config files.
"""
