#!/bin/bash
# The family 0.8/0.5/0.3 with the step to each next target (family_fall="step"), members fine-tuned 800 steps.
# Run from the root of a checkout of 7f60bfd (../shared beside it) with slimbert installed (pip install -e .).
/usr/bin/time -v slimbert prune --model ../shared/models/minilm-l6-squad2 --train ../shared/data/squad2/train.json --extra-train ../shared/data/squad1/train-428articles.json --max-extra-examples 8000 --eval ../shared/data/squad2/dev.json --targets 0.8,0.5,0.3 --out runs/family --max-steps 400 --finetune-steps 800 --lr 1e-4 --batch-size 16 --max-length 256 --doc-stride 96 --save-every 100 --seed 0
python bench/plot_run.py runs/family/prune_result.json bench/results/family-step-cpu/training.png
python bench/recipe_curve.py --family bench/results/family-cpu --family bench/results/family-step-cpu
