#!/usr/bin/env bash
# Train in the GPU image (Dockerfile.gpu) on this machine's GPUs.
#
#   DATA_DIR=$PWD/shards RUNS_DIR=$PWD/runs scripts/docker_train.sh \
#       --data_dir=/data --model_dir=/runs/exp1 --batch_size=512 --epochs=90
#
# Every argument is a toolkit.train flag, passed through unchanged; inside the container the
# host directories are mounted at:
#   DATA_DIR    -> /data     (read-only; default: ./data)
#   RUNS_DIR    -> /runs     (default: ./runs)
#   EXPORTS_DIR -> /exports  (default: ./exports)
#   CACHE_DIR   -> /cache    (Keras' downloads, e.g. the ImageNet weights; default: ~/.cache/toolkit)
# so give the trainer /data, /runs/NAME and /exports/NAME paths.
#
# Environment:
#   IMAGE     the image (default: toolkit:gpu, from `docker build -f Dockerfile.gpu -t toolkit:gpu .`)
#   GPUS      docker's --gpus value (default: all; e.g. '"device=0,1"' or 2)
#   SHM_SIZE  shared memory for NCCL and tf.data (default: 16g)
#   DOCKER    the docker command (default: docker; DOCKER=echo prints the command instead)
#   TF_CONFIG when set (one machine of a multi-worker job), it is passed into the container and
#             the container uses the host's network so the workers' addresses in it are reachable
set -euo pipefail

IMAGE=${IMAGE:-toolkit:gpu}
GPUS=${GPUS:-all}
SHM_SIZE=${SHM_SIZE:-16g}
DOCKER=${DOCKER:-docker}
DATA_DIR=${DATA_DIR:-$PWD/data}
RUNS_DIR=${RUNS_DIR:-$PWD/runs}
EXPORTS_DIR=${EXPORTS_DIR:-$PWD/exports}
CACHE_DIR=${CACHE_DIR:-$HOME/.cache/toolkit}

# created here, as the calling user, so the container (running as that user) can write them
mkdir -p "$RUNS_DIR" "$EXPORTS_DIR" "$CACHE_DIR"
abspath() { (cd "$1" && pwd); }

args=(
  run --rm --init
  --gpus "$GPUS"
  --shm-size "$SHM_SIZE"
  # NCCL pins host memory and uses deep stacks: lift the container defaults as NVIDIA advises
  --ulimit memlock=-1 --ulimit stack=67108864
  # files in the mounted directories belong to the calling user, not root or uid 1000
  --user "$(id -u):$(id -g)"
  --mount "type=bind,source=$(abspath "$RUNS_DIR"),target=/runs"
  --mount "type=bind,source=$(abspath "$EXPORTS_DIR"),target=/exports"
  --mount "type=bind,source=$(abspath "$CACHE_DIR"),target=/cache"
)
if [[ -d $DATA_DIR ]]; then
  args+=(--mount "type=bind,source=$(abspath "$DATA_DIR"),target=/data,readonly")
else
  echo "docker_train: DATA_DIR $DATA_DIR does not exist: /data not mounted (fine for the built-in demo dataset)" >&2
fi
if [[ -n ${TF_CONFIG:-} ]]; then
  args+=(--env TF_CONFIG --network host)
fi
[[ -t 0 && -t 1 ]] && args+=(--interactive --tty)  # Ctrl-C reaches the trainer

exec "$DOCKER" "${args[@]}" "$IMAGE" "$@"
