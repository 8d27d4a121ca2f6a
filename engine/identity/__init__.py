"""Identity: the Stand-In adapter files and the patch on ComfyUI's Wan model."""
