"""The RQ job and the export engine it drives."""
