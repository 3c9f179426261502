"""W1 written the way task-arithmetic code usually is: PyTorch, one model at a time, state-dict arithmetic and a
Python loop over lambda. Same model, data, SGD and grid as tvtheory's W1. Prints one JSON line.

  python bench/torch_baseline.py          (needs torch: `make bench` installs the bench extra's, under the lock)
"""

import copy
import json
import math
import time

import numpy as np
import torch
from torch import nn

D, P, M, N_REL, N_CONF, STEPS, BATCH, N_TEST, ETA = 32, 20, 256, 4, 2, 300, 64, 2000, 1.0
ALPHAS, SEEDS = [-0.9, -0.5, 0.0, 0.5, 0.9], 5
LAMS = np.round(np.arange(-2, 3.0001, 0.1), 2)


class OneLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.zeros(D, D))
        self.V = nn.Parameter(0.01 * torch.randn(M, D))
        self.register_buffer("a", torch.where(torch.arange(M) < (M + 1) // 2, 1.0, -1.0) / math.sqrt(M))

    def forward(self, X):
        S = torch.einsum("nsd,nld->nls", X, X @ self.W.T)
        H = torch.relu(torch.softmax(S, dim=-1) @ (X @ self.V.T))
        return H.mean(dim=1) @ self.a


def sample(gen, mu, irr, n):
    y = torch.where(torch.rand(n, generator=gen) < 0.5, 1.0, -1.0)
    sign = torch.cat([torch.ones(N_REL), -torch.ones(N_CONF), torch.zeros(P - N_REL - N_CONF)])
    perm = torch.argsort(torch.rand(n, P, generator=gen), dim=1)
    s = sign[perm]
    j = torch.randint(0, irr.shape[0], (n, P), generator=gen)
    X = (s * y[:, None])[..., None] * mu + torch.where((s == 0)[..., None], irr[j], torch.zeros(()))
    return X, y


def finetune(model, mu, irr, gen):
    opt = torch.optim.SGD(model.parameters(), lr=ETA)
    for _ in range(STEPS):
        X, y = sample(gen, mu, irr, BATCH)
        loss = torch.relu(1 - y * model(X)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def main():
    torch.set_num_threads(torch.get_num_threads())
    t0 = time.perf_counter()
    eye = torch.eye(D)
    irr = eye[2:]
    results = []
    for seed in range(SEEDS):
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        psi0 = OneLayer()
        sd0 = copy.deepcopy(psi0.state_dict())
        ft1 = finetune(copy.deepcopy(psi0), eye[0], irr, gen).state_dict()
        tv1 = {k: ft1[k] - sd0[k] for k in ("W", "V")}
        for alpha in ALPHAS:
            mu2 = alpha * eye[0] + math.sqrt(1 - alpha**2) * eye[1]
            ft2 = finetune(copy.deepcopy(psi0), mu2, irr, gen).state_dict()
            tv2 = {k: ft2[k] - sd0[k] for k in ("W", "V")}
            tests = [sample(gen, eye[0], irr, N_TEST), sample(gen, mu2, irr, N_TEST)]
            model = copy.deepcopy(psi0)
            for lam in LAMS:
                sd = {**sd0, **{k: sd0[k] + tv1[k] + float(lam) * tv2[k] for k in ("W", "V")}}
                model.load_state_dict(sd)
                with torch.no_grad():
                    for X, y in tests:
                        f = model(X)
                        results.append((float(torch.relu(1 - y * f).mean()), float((y * f > 0).float().mean())))
    wall = time.perf_counter() - t0
    print(json.dumps({"workload": "W1-torch", "seconds": wall, "rows": len(results), "torch": torch.__version__,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
