"""The pack's machinery, apart from its nodes.

Every module here is plain Python over torch / numpy / OpenCV / c2pa and imports without
ComfyUI, except ``identity/patch.py``, which patches ComfyUI's Wan model by nature (it imports
``comfy.ldm.wan.model``, ``comfy.model_patcher`` and ``comfy.patcher_extension``). The node files
in ``../nodes`` hold a schema each and call into these modules.

- ``identity/``: the Stand-In adapter files (``adapter``) and the patch on ComfyUI's Wan blocks
  (``patch``: reference K/V, restricted self-attention, conditional position mapping).
- ``faces/``: face detection and reference preparation (``detect``), face swap (``swap``),
  face embeddings and identity scores (``embed``), similarity plots (``plot``); bundled detector
  weights in ``faces/models``.
- ``provenance/``: consent records and the policy (``consent``), C2PA labels and verification
  (``c2pa_label``), the append-only audit log (``audit``).
- ``weights``: the weights manifest (which file goes where, and the download command).
"""
