# Customer Data Platform — run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
KAFKA_STAMP := .cache/kafka/libs/.pom-digest
PYTEST_ARGS ?=
LINT_PATHS := pipeline tests $(wildcard bench)

export TZ := UTC

.PHONY: help setup up down status demo test test-all bench lint format clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

$(KAFKA_STAMP): deploy/kafka/pom.xml | $(STAMP)
	$(BIN)/cdp kafka fetch

setup: $(STAMP) $(KAFKA_STAMP) ## Create the venv, install dependencies, fetch the Kafka jars (idempotent)

up: setup ## Start Kafka, the worker and the collector in the background (returns when healthy)
	$(BIN)/cdp up

down: ## Stop everything `make up` started
	@if [ -x $(BIN)/cdp ]; then $(BIN)/cdp down; else echo "nothing to stop"; fi

status: ## Show what runs and where
	@$(BIN)/cdp status

demo: setup ## Run the demo on the embedded stack (installs what it needs on first run)
	$(BIN)/cdp demo

test: setup ## Run the test suite (unit + integration with a real Kafka broker and chDB; no slow tests)
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

test-all: setup ## Run every test, the slow ones too
	$(BIN)/pytest $(PYTEST_ARGS)

bench: setup ## Run the benchmarks and write BENCHMARKS.md
	$(BIN)/python -m bench.run

lint: setup ## ruff (lint + format check) and mypy
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

format: setup ## Format the code with ruff
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

clean: down ## Stop the stack and delete local data (.run/)
	rm -rf .run
