#!/bin/bash
# The family 0.8/0.5/0.3 with each later target seated on its Fisher mask (family_fall="fisher"), members fine-tuned 800 steps.
# Run from the root of a checkout of 5eca4e7 (../shared beside it) with slimbert installed (pip install -e .);
# 2-core x86_64 CPU, no GPU, empty caches (the teacher-logit cache is built first, about 9.5 min of the wall time).
/usr/bin/time -v slimbert prune --model ../shared/models/minilm-l6-squad2 --train ../shared/data/squad2/train.json --extra-train ../shared/data/squad1/train-428articles.json --max-extra-examples 8000 --eval ../shared/data/squad2/dev.json --targets 0.8,0.5,0.3 --family-fall fisher --out runs/family-fisher --max-steps 400 --finetune-steps 800 --lr 1e-4 --batch-size 16 --max-length 256 --doc-stride 96 --save-every 100 --seed 0
python bench/plot_run.py runs/family-fisher/prune_result.json bench/results/family-fisher-cpu/training.png
python bench/recipe_curve.py --family bench/results/family-cpu --family bench/results/family-step-cpu --family bench/results/family-fisher-cpu
