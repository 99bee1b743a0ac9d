#!/usr/bin/env bash
# What a lent GPU machine needs beside the checkout, from the repository root:
#
#     bash tests/benchmarks/gpu_carry.sh pack      # before the device call
#     bash tests/benchmarks/gpu_carry.sh unpack    # after it
#
# The machine has torch but neither the Jupyter stack nor Dask, sees only the checkout, and takes at most 64 MiB of it.
# pack downloads papermill, ipykernel, distributed, fastcore and the packages they need that the machine lacks, at this
# venv's versions (the set that ran there on 2026-12-06), as CPython 3.12 wheels into .whl/; copies MNIST/raw from $ENTROPIC_AE_DATA into .data/ (both
# git-ignored); and moves figures/ (most of the checkout's size, unused by the cells) aside to $STASH until unpack.
# The device call then names .whl and .data in carry and starts with
#     python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#     export ENTROPIC_AE_DATA=$PWD/.data; bash tests/benchmarks/gpu_session.sh $OUT/a 540
set -euo pipefail
stash=${STASH:-/tmp/eae_figures_stash}
case ${1:?usage: gpu_carry.sh pack|unpack} in
pack)
  [ -e "$stash" ] && { echo "gpu_carry: $stash exists: unpack first"; exit 1; }
  rm -rf .whl .data
  pkgs="papermill entrypoints tenacity nbclient nbformat fastjsonschema jsonschema jsonschema-specifications referencing
        rpds-py jupyter_client jupyter_core traitlets pyzmq tornado platformdirs ipykernel comm debugpy ipython jedi parso
        ipython_pygments_lexers prompt_toolkit wcwidth pexpect ptyprocess decorator stack_data asttokens executing pure_eval
        matplotlib-inline nest-asyncio2 fastcore execnb dask distributed partd locket tblib zict importlib_metadata zipp"
  spec=$(for p in $pkgs; do v=$(.venv/bin/pip show "$p" 2>/dev/null | awk '/^Version/{print $2}'); echo "$p${v:+==$v}"; done)
  .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 $spec 2> >(grep -v '^WARNING: Location' >&2)
  raw=${ENTROPIC_AE_DATA:?set ENTROPIC_AE_DATA to the data root}/MNIST/raw
  mkdir -p .data/MNIST/raw && cp "$raw"/*.gz .data/MNIST/raw/ && chmod -R u+w .data
  mv figures "$stash"
  echo "gpu_carry: $(ls .whl | wc -l) wheels ($(du -sh .whl | cut -f1)), MNIST ($(du -sh .data | cut -f1)); figures/ in $stash;" \
       "checkout without .git: $(du -sh --exclude=.git --exclude=.venv --exclude=runs --exclude='*.egg-info' . | cut -f1)" ;;
unpack)
  if [ -d "$stash" ] && [ ! -e figures ]; then mv "$stash" figures; echo "gpu_carry: figures/ restored"
  else echo "gpu_carry: nothing to restore ($stash missing or figures/ present)"; exit 1; fi ;;
*) echo "usage: gpu_carry.sh pack|unpack"; exit 1 ;;
esac
