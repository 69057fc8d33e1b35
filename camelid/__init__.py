"""camelid: an open implementation of the LLaMA system (data, tokenizer, model, training, release, eval).

    import camelid
    m = camelid.load("smollm2-135m")
    print(m.generate("The capital of France is", max_new_tokens=8))

`import camelid` is cheap: torch loads with the first model.
"""

from camelid.lazy import lazy_exports

__version__ = "0.1.0"

_HOME = {"load": "api", "Model": "api"}
__getattr__ = lazy_exports(__name__, _HOME)
__all__ = ["Model", "__version__", "load"]
