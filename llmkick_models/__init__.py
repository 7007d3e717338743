"""llmkick_models: the ``compressed-hf`` lm-eval model and the compression methods behind it.

Kept import-free on purpose: the site-packages ``.pth`` hook imports ``llmkick_models._boot`` at every
interpreter start, which imports this package first.  Import ``llmkick_models.compressed_hf`` for the model.
"""
