"""The web page of ``audiomemory web``: a Gradio app that is a client of the orchestrator over gRPC.

- ``page``: the components and their layout.
- ``app``: the handlers (a job's events → status and progress; Cancel; the gallery and its remix).
- ``results``: the output folder (the gallery, read by PNG metadata) and the uploaded songs.

Gradio is the ``web`` extra; nothing else in the project imports this package.
"""
