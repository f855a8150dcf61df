# The README's two commands, as make targets: `make run` (the app) and `make test` (the whole suite).
# Both set up .venv on first use. MODEL=... picks the model (hub id or local folder).
MODEL ?=
ARGS ?=

.PHONY: run test bench clean
run:
	scripts/setup.sh app && .venv/bin/python app.py $(if $(MODEL),--model $(MODEL)) $(ARGS)

test:
	scripts/setup.sh dev && .venv/bin/python -m pytest -q -ra

bench:
	@VENV=.venv-peers scripts/setup.sh peers
	.venv-peers/bin/python -m quant bench $(if $(MODEL),--model $(MODEL)) $(ARGS)

clean:
	rm -rf .venv .venv-peers .pytest_cache
