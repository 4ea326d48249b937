"""Model code for facefoundry: one package per endpoint, shared face tools in ``common``.

Nothing here knows about HTTP; the server reaches a pipeline only through ``registry``.
"""
