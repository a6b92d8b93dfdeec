#!/usr/bin/env bash
# Installs the Java engines the test suite runs (Apache Kafka, Apache Cassandra) from Maven
# Central: for each scripts/engines/<name>/pom.xml, the artifact and its dependencies are
# copied into .engines/<name>/lib (git-ignored; Maven's own cache is ~/.m2). Needs java 17
# and mvn (Debian's openjdk-17-jre-headless and maven). Idempotent: an engine whose lib
# folder is complete (it holds the marker `.complete`, written last) is skipped.
#
# Usage: scripts/install-engines.sh            every engine
#        scripts/install-engines.sh kafka      only those named
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -gt 0 ]; then names=("$@"); else names=(); for pom in scripts/engines/*/pom.xml; do [ -e "$pom" ] && names+=("$(basename "$(dirname "$pom")")"); done; fi
for name in "${names[@]}"; do
    pom="scripts/engines/$name/pom.xml"
    lib=".engines/$name/lib"
    [ -f "$pom" ] || { echo "no engine $name (no $pom)" >&2; exit 2; }
    if [ -f "$lib/.complete" ] && [ "$lib/.complete" -nt "$pom" ]; then continue; fi
    command -v mvn >/dev/null 2>&1 || { echo "mvn is not installed (apt-get install maven openjdk-17-jre-headless)" >&2; exit 1; }
    rm -rf "$lib"; mkdir -p "$lib"
    echo "installing $name from Maven Central into $lib"
    mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$PWD/$lib"
    touch "$lib/.complete"
done
