"""selfish_lib: the library behind the Selfish Tokens study of hard negative sampling.

Modules, one concept each: ``corpus`` (data), ``model`` (tied-embedding GPT),
``losses`` (HNS cross-entropy), ``training`` (TrainConfig and the loop),
``evaluation`` (whole-split metrics), ``runs`` (the run store), ``profiles``
(sizes, steps, seeds), ``pipeline`` (papermill execution of the notebooks).
"""

__version__ = "0.1.0"
