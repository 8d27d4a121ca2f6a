"""Faces: detection and reference preparation, face swap, embeddings, plots."""
