"""The compression engine: specs, the layer-by-layer calibration driver, the methods and their math.

Knows nothing of lm-eval: it takes a ``transformers`` model and a ``CompressionSpec`` and compresses it.
"""
