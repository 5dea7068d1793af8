#!/bin/bash
# The family with the nested Fisher start, no fine-tune: structure and snap accuracy of each member.
# Run from the root of a checkout of d7501d0 (../shared beside it) with slimbert installed (pip install -e .).
/usr/bin/time -v slimbert prune --model ../shared/models/minilm-l6-squad2 --train ../shared/data/squad2/train.json --extra-train ../shared/data/squad1/train-428articles.json --max-extra-examples 8000 --eval ../shared/data/squad2/dev.json --targets 0.8,0.5,0.3 --out runs/family-ft0 --max-steps 400 --finetune-steps 0 --lr 1e-4 --batch-size 16 --max-length 256 --doc-stride 96 --save-every 100 --seed 0
python bench/plot_run.py runs/family-ft0/prune_result.json bench/results/family-ft0-cpu/training.png
