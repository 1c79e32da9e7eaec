#!/usr/bin/env bash
# Downloads the wheels a GPU machine without package access needs to run benchmarks/gpu_check.sh.
#
#   bash benchmarks/gpu_wheels.sh [DEST]        # default DEST: .gpu-wheels (ignored by git)
#
# The target is a machine whose image already holds torch, torchvision, timm, huggingface-hub,
# safetensors, pillow, tqdm, numpy, scipy, pandas, pyarrow, PyYAML, OpenCV (headless), packaging and
# nvidia-ml-py, under CPython 3.12 on Linux x86_64. What it lacks is downloaded here with --no-deps,
# each at the version constraints.txt pins, so the list below is the whole set that travels:
#
#   segmentation_models_pytorch               the models
#   albumentations, albucore,                 the CPU augmentation pipeline and what it imports
#     pydantic, pydantic_core, annotated-types, typing-inspection, typing_extensions,
#     stringzilla, simsimd
#   pydicom, nibabel                          imported by trainables.data (its DICOM / NIfTI readers)
#
# Everything that travels to such a machine (the working tree and the carried folders) must stay
# under 64 MiB; the script fails when the wheels alone pass WHEEL_LIMIT_MB (default 40).
# Override the target with PYTHON_VERSION (default 3.12) or PYTHON (the interpreter whose pip runs).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$here/.gpu-wheels}"
python="${PYTHON:-python3}"
py_version="${PYTHON_VERSION:-3.12}"
limit_mb="${WHEEL_LIMIT_MB:-40}"
constraints="$here/constraints.txt"

packages=(
  segmentation_models_pytorch
  albumentations albucore pydantic pydantic_core annotated-types typing-inspection typing_extensions
  stringzilla simsimd
  pydicom nibabel
)

# name==version from constraints.txt (names compared as pip does: case and -_. folded)
pin() {
  local want
  want="$(echo "$1" | tr 'A-Z_.' 'a-z--')"
  while IFS= read -r line; do
    local name="${line%%==*}"
    if [[ "$line" == *==* && "$(echo "$name" | tr 'A-Z_.' 'a-z--')" == "$want" ]]; then
      echo "$line"
      return
    fi
  done < "$constraints"
  echo "$1"  # not pinned: the newest release
}

platforms=()
for tag in manylinux_2_17 manylinux2014 manylinux_2_24 manylinux_2_27 manylinux_2_28 manylinux_2_31 \
           manylinux_2_34 manylinux_2_35 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done

mkdir -p "$dest"
rm -f "$dest"/*.whl  # one version of each: two stop the install
specs=()
for p in "${packages[@]}"; do specs+=("$(pin "$p")"); done
echo "downloading for CPython $py_version, Linux x86_64: ${specs[*]}"
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$py_version" \
  --implementation cp "${platforms[@]}" -d "$dest" "${specs[@]}"

count="$(find "$dest" -name '*.whl' | wc -l)"
if [[ "$count" -ne "${#packages[@]}" ]]; then
  echo "expected ${#packages[@]} wheels, got $count (two versions of one package stop the install)" >&2
  exit 1
fi
total_kb="$(du -sk "$dest" | cut -f1)"
ls -1s --block-size=K "$dest" | tail -n +2
echo "total: $count wheels, $((total_kb / 1024)) MiB in $dest (limit ${limit_mb} MiB; all that travels must stay under 64 MiB)"
if (( total_kb > limit_mb * 1024 )); then
  echo "the wheels exceed ${limit_mb} MiB" >&2
  exit 1
fi
