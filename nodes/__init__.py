"""The pack's code: adapter files, the Stand-In patch on Wan, and the ComfyUI nodes."""
