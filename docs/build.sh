#!/usr/bin/env bash
# Build the documentation site with warnings as errors, check that every
# public name is documented, and run the snippets the pages include.
#   bash docs/build.sh [SITE_DIR]      (default: a temporary directory)
# Needs: pip install mkdocs mkdocs-material 'mkdocstrings[python]' (see docs/README.md)
# and netring_chan importable (pip install -e .).
set -euo pipefail
cd "$(dirname "$0")/.."

site=${1:-}
if [ -z "$site" ]; then
  site=$(mktemp -d)
  trap 'rm -rf "$site"' EXIT
fi

# mkdocs.yml has strict: true; --strict says it again. Quiet the
# material theme's banner about its successor (not a warning of ours).
NO_MKDOCS_2_WARNING=1 python3 -m mkdocs build --strict --clean -d "$site"
python3 docs/check_api.py
for f in docs/snippets/*.py; do
  echo "docs/build.sh: running $f"
  (cd "$(mktemp -d)" && timeout 60 python3 "$OLDPWD/$f" >/dev/null)
done
echo "docs/build.sh: site built in $site"
