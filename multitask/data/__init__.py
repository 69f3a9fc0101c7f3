"""Data sources (competition layout, manifest CSV), splits, decode-once cache, transforms, synthetic faces."""
