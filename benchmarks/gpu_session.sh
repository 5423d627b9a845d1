#!/usr/bin/env bash
# Every CUDA check and GPU benchmark of mfkit in one run (on one H200 about 4 minutes for the eight steps of
# 2026-11-29, cuda_check to cuda_tests; all of it, by estimate, over 10 minutes: split it with ONLY), for a
# session that is lent a GPU for a short time. Run from the repository root on a CUDA machine with
# mfkit and the plugins importable (pip install -e . -e plugins/image -e plugins/audio -e plugins/points):
#
#     bash benchmarks/gpu_session.sh OUTDIR          # logs: OUTDIR/<step>.log, summary on stdout
#     QUICK=1 bash benchmarks/gpu_session.sh OUTDIR  # fewer steps per timing (a dry run of the script)
#     ONLY="dit_b4_precisions attention_fp32" bash benchmarks/gpu_session.sh OUTDIR   # some steps only
#
# Each step runs under `timeout` (LIMIT seconds, default 150) and the script goes on after a failure,
# printing "== <step> rc N" for each, so one broken step costs one step's time, not the session.
# Order: exactness first (cuda_check: every JVP backend, bf16, a bf16 training run with resume, every
# attention-tangent path incl. the Triton kernel), then timings: the attention tangent on a DiT-B/4 block,
# DiT-B/4 training steps on ImageNet-sized latents, the share of a DiT-B/4 step the GPU is busy, the conv + attention net at 256 tokens, the 4 x 1024
# MLP at the ImageNet r != t share and at every row, every shipped backbone, the CUDA kernel tests, and
# torch.compile'd flow-matching and MeanFlow steps on the MLP.
set -u
out=${1:-gpu-results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
steps=${QUICK:+3}
steps=${steps:-20}
# cuDNN builds an attention plan for each new batch shape, and MeanFlow's split passes change shape with the
# number of r != t rows: 3 warm-up steps timed those builds (DiT-B/4 with jvp_precision autocast: 7.3x flow
# matching cold, 2.4x warm; docs/benchmarks.md). 30 warm-up steps see most row counts of a batch of 256.
warmup=${QUICK:+3}
warmup=${warmup:-30}
run() {
    local name=$1
    shift
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then
        return
    fi
    echo "== $name: $*"
    timeout "${LIMIT:-150}" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    grep -v "^USDT\|^\[W\|UserWarning\|warnings.warn" "$out/$name.log" | tail -n 60
    echo "== $name rc $rc"
}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
run cuda_check python3 benchmarks/cuda_check.py --checks attention,backends,bf16,training
run precisions python3 benchmarks/cuda_check.py --checks precisions
run attention_dit_b4 python3 benchmarks/attention_triton.py --repeats "$steps"
run attention_1024 python3 benchmarks/attention_triton.py --batch 16 --tokens 1024 --repeats "$steps"
run dit_b4_bf16 python3 plugins/image/benchmarks/train_step.py --device cuda --dtype bf16 --shape 4,32,32 \
    --batch 256 --backbones dit --dit '{"preset": "B/4"}' --repeats "$steps" --warmup "$warmup" \
    --objectives forward_ad,forward_ad@all,forward_ad_plain,nograd
run dit_b4_precisions python3 plugins/image/benchmarks/train_step.py --device cuda --dtype bf16 --shape 4,32,32 \
    --batch 256 --backbones dit --dit '{"preset": "B/4"}' --repeats "$steps" --warmup "$warmup" \
    --objectives forward_ad,forward_ad@all --precisions fp32,tf32,autocast
for objective in flow_matching forward_ad; do  # GPU busy share of a step: is MeanFlow's step host-bound?
    run "profile_${objective}_tf32" python3 plugins/image/benchmarks/profile_step.py --device cuda --dtype bf16 \
        --backbone dit --params '{"preset": "B/4"}' --shape 4,32,32 --batch 256 --objective "$objective" \
        --precision tf32 --rows 20 --warmup "$warmup"
done
run attention_fp32 python3 benchmarks/attention_triton.py --batch 256 --dtype float32 --repeats "$steps"
run attention_tf32 python3 benchmarks/attention_triton.py --batch 256 --dtype float32 --tf32 --repeats "$steps"
run unet_precisions python3 plugins/image/benchmarks/train_step.py --device cuda --dtype bf16 --shape 3,32,32 \
    --batch 128 --backbones unet --unet '{}' --repeats "$steps" --warmup "$warmup" --objectives forward_ad \
    --precisions fp32,tf32,autocast
run dit_b4_fp32 python3 plugins/image/benchmarks/train_step.py --device cuda --shape 4,32,32 \
    --batch 256 --backbones dit --dit '{"preset": "B/4"}' --repeats "$steps" --warmup "$warmup" \
    --objectives forward_ad,forward_ad@all
run unet_cifar_bf16 python3 plugins/image/benchmarks/train_step.py --device cuda --dtype bf16 --shape 3,32,32 \
    --batch 128 --backbones unet --unet '{}' --repeats "$steps" --warmup "$warmup" \
    --objectives forward_ad,forward_ad@all
run conv256 python3 benchmarks/train_step.py --device cuda --backbone conv --width 64 --depth 2 --batch 32 \
    --image 16 --interleaved --steps "$steps" --configs flow_matching,forward_ad,forward_ad@all
run mlp_share025 python3 benchmarks/train_step.py --device cuda --interleaved --steps "$steps" \
    --configs flow_matching,forward_ad,forward_ad@all
run mlp_share025_bf16 python3 benchmarks/train_step.py --device cuda --dtype bf16 --interleaved --steps "$steps" \
    --configs flow_matching,forward_ad,forward_ad@all
run shipped_bf16 python3 benchmarks/train_step.py --device cuda --dtype bf16 --shipped --interleaved \
    --steps "$steps" --configs flow_matching,forward_ad,forward_ad@all
run profile_autocast python3 plugins/image/benchmarks/profile_step.py --device cuda --dtype bf16 --backbone dit \
    --params '{"preset": "B/4"}' --shape 4,32,32 --batch 256 --objective forward_ad --precision autocast --rows 30 \
    --warmup "$warmup"
run cuda_tests python3 -m pytest -q -p no:cacheprovider tests/core/test_attention_triton.py \
    tests/core/test_attention_tangent.py
run mlp_compile python3 benchmarks/train_step.py --device cuda --interleaved --steps "$steps" --compile \
    --configs flow_matching,forward_ad
