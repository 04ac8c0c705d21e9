#!/usr/bin/env bash
# Runs a benchmark binary in smoke mode (tiny sizes): the harness still works.
set -euo pipefail
exec "$1" --smoke
