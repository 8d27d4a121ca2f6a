"""The pack's machinery, apart from its nodes.

Every module here is plain Python over torch / numpy / OpenCV / c2pa and imports without
ComfyUI, except ``identity/patch.py``, which patches ComfyUI's Wan model by nature (it imports
``comfy.ldm.wan.model``, ``comfy.model_patcher`` and ``comfy.patcher_extension``). The node files
in ``../nodes`` hold a schema each and call into these modules.

- ``identity/``: the Stand-In adapter files (``adapter``), the patch on ComfyUI's Wan blocks
  (``patch``: reference K/V, restricted self-attention, conditional position mapping, one person
  or several), where each person may act (``regions``), and the identity under xDiT sequence
  parallelism for Raylight (``sequence_parallel``, ``actor_entry``).
- ``faces/``: face detection and reference preparation (``detect``), face swap (``swap``),
  face embeddings and identity scores (``embed``), similarity plots (``plot``); bundled detector
  weights in ``faces/models``.
- ``provenance/``: consent records (``consent``), the policy file and its schema (``policy``),
  what must hold before sampling (``preflight``), C2PA labels and verification (``c2pa_label``),
  staging, publication and quarantine (``publish``), the append-only audit log (``audit``).
- ``pilot/``: many identity videos over ComfyUI's API, scored and reported (``tools/pilot.py``).
- ``weights``: the weights manifest (which file goes where, and the download command).
"""
