"""The pilot: many identity videos (people x prompts x seeds x settings) over ComfyUI's HTTP API,
on one server or several, each video scored and recorded, and a report.

- ``plan``: the plan file (TOML or JSON), its expansion into jobs, the prompt each job queues.
- ``client``: one ComfyUI server over its standard HTTP + websocket API.
- ``dispatch``: keeps every server busy, moves the jobs of a server that fails, resumes.
- ``score``: identity similarity (``faces.embed``) and motion (OpenCV optical flow) of a video.
- ``results``: the append-only results and failures files.
- ``report``: report.html (self-contained) and results.csv.

Nothing here imports ComfyUI: the pilot talks to servers, it does not run models.
"""
