#!/usr/bin/env bash
# Java runs METEOR 1.5 and the PTB tokenizer (pycocoevalcap's jars). Installs Debian's JRE if missing.
set -euo pipefail
if command -v java >/dev/null 2>&1; then exit 0; fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if command -v apt-get >/dev/null 2>&1; then
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq default-jre-headless >/dev/null
else
  echo "warning: no java and no apt-get: install a Java runtime (>= 8) for METEOR / PTB tokenizer metrics" >&2
fi
