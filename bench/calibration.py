"""ECE of the shipped hybrid MNIST classifier and whether its density flags the inputs it gets wrong
(issue 19.4). Needs MNIST under $HYBRIDFLOW_DATA: HYBRIDFLOW_DATA=../shared/data python bench/calibration.py"""
import os
import torch
from sklearn.metrics import roc_auc_score
from hybridflow import load_pretrained, freeze
from hybridflow.data import load_dataset
from hybridflow.estimators import expected_calibration_error
torch.set_num_threads(2)
test = load_dataset("mnist", os.environ.get("HYBRIDFLOW_DATA"), train=False)
fast = freeze(load_pretrained("mnist-hybrid"))
probs, bpd = [], []
with torch.no_grad():
    for x in test.images.split(1000):
        probs.append(fast.predict_proba(x)); bpd.append(fast.bits_per_dim(x))
p, b, y = torch.cat(probs).double().numpy(), torch.cat(bpd).numpy(), test.labels.numpy()
wrong = p.argmax(1) != y
conf = p.max(1)
print(f"test accuracy {1 - wrong.mean():.4f}; ECE (15 bins) {expected_calibration_error(p, y):.4f}")
cw = wrong & (conf > 0.9)
print(f"confidently wrong (p>0.9): {cw.sum()} of {wrong.sum()} errors")
print(f"bits/dim: correct mean {b[~wrong].mean():.3f}, wrong {b[wrong].mean():.3f}, confidently wrong {b[cw].mean():.3f}")
print(f"AUROC of bits/dim for wrong vs correct {roc_auc_score(wrong, b):.3f}; confidently wrong vs correct {roc_auc_score(cw[~wrong | cw], b[~wrong | cw]):.3f}")
