"""How a swarm of Adam-trained nodes ends on digits split by label, by what each node sends.

An in-process simulation of tests/sl/test_default_arguments.py (PyTorch): three sites
hold the digits whose label % 3 is their index (4, 3 and 3 classes), each trains
64-32-10 with Adam at its defaults, batch 32, 6 epochs, and syncs every 8 batches;
a site that has finished keeps contributing its final model (checkinModelOnTrainEnd=
"snapshot"); the merge is the plain mean. What a node sends:

- plain:     its model
- reset:     its model, with the output rows of the classes it never saw reset to the
             merged ones
- fedrs:     its model, trained with the softmax restricted to the classes it has
             seen (FedRS, Li & Zhan, KDD 2021, alpha = 0)
- scaled:    swarm.callback.adaptive_step.AdaptiveStep without momentum (peers x update)
- unbounded: peers x update + momentum 0.8, without the length bound (the first default)
- bounded0.8: the same, no longer than peers x the node's own step
- gain1:     peers x update + momentum 0.5, no longer than peers x the node's own step
             (the default until the gain and the restart came)
- default:   AdaptiveStep as the callback uses it (1.5 x peers x update + momentum 0.5,
             no longer than 1.5 x peers x the node's own step, no momentum when the
             node's step points against the merged model's last step)

and, for reference, one model trained on all the data for as many steps (central).
`--iid` splits the same data at random instead (similar sites); `--nodes`, `--epochs`
change the number of sites and the training length; `--modes` picks the rows.

The rounds above are lockstep from a common start. `--real` runs them as the real test
does instead (tests/sl/digits_user_torch.py under real SL nodes; seed 0 is that script's
seeds; the dynamics are chaotic, so only medians compare): each node starts from its own
init (torch.manual_seed(node)) and the BEGIN round adopts one of them, as the SL node does
under the mean (it takes the lowest digest's; here node `--pick`'s, default 0), or
averages them (`--init mean`, as the SL node did before)
for all); a node syncs only after a full syncFrequency batches, trains its last batches
and contributes its final update (snapshot) from the next round on; the last node to
finish ends the swarm, and its final update is merged into the final model first
(`--drop-last`: not merged, as the SL node did before: the final model is then the
larger site's last rounds over the smaller sites' stale snapshots).

    .venv/bin/python benchmarks/adam_label_skew.py [--seeds 4] [--iid] [--nodes 3] [--epochs 6]
    .venv/bin/python benchmarks/adam_label_skew.py --real [--init mean] [--pick 1] [--drop-last] --modes plain,default
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from sklearn.datasets import load_digits

from swarm.callback.adaptive_step import MOMENTUM, AdaptiveStep

NODES, EPOCHS, SYNC, BATCH = 3, 6, 8, 32
HEAD = ("2.weight", "2.bias")
# AdaptiveStep(mask, momentum, bounded, gain, restart)
RULES = {"scaled": (0.0, True, 1.0), "unbounded": (0.8, False, 1.0, False),
         "bounded0.8": (0.8, True, 1.0, False), "gain1": (MOMENTUM, True, 1.0, False),
         "default": ()}


def data(iid: bool):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    train_x, train_y, test = x[400:], y[400:], (torch.from_numpy(x[:400]), torch.from_numpy(y[:400]))
    sites = [train_y % NODES == i for i in range(NODES)]
    if iid:  # the same sizes, drawn at random
        perm = np.random.default_rng(1).permutation(len(train_y))
        bounds = np.cumsum([0] + [int(s.sum()) for s in sites])
        sites = [perm[bounds[i]:bounds[i + 1]] for i in range(NODES)]
    return [(torch.from_numpy(train_x[s]), torch.from_numpy(train_y[s])) for s in sites], test


def net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def flat(model) -> np.ndarray:
    return torch.cat([t.detach().flatten() for t in model.state_dict().values()]).numpy().copy()


def load(model, vector: np.ndarray) -> None:
    state, at = {}, 0
    for name, tensor in model.state_dict().items():
        state[name] = torch.from_numpy(vector[at:at + tensor.numel()].copy()).view_as(tensor)
        at += tensor.numel()
    model.load_state_dict(state)


def accuracy(model, test) -> float:
    with torch.no_grad():
        return float((model(test[0]).argmax(1) == test[1]).float().mean())


def swarm(mode: str, seed: int, sites, test) -> float:
    models = [net(seed * 10 + i) for i in range(NODES)]
    start = flat(models[0])
    for model in models:
        load(model, start)
    optimizers = [torch.optim.Adam(m.parameters()) for m in models]
    generator = torch.Generator().manual_seed(seed)
    batches = [[idx for _ in range(EPOCHS) for idx in torch.randperm(len(y), generator=generator)
                .split(BATCH)] for _, y in sites]
    seen = [set(y.tolist()) for _, y in sites]
    steps = [AdaptiveStep(np.ones(start.size, dtype=bool), *RULES[mode]) if mode in RULES else None
             for _ in range(NODES)]
    head = {}  # element ranges of the output layer's rows, per class
    at = 0
    for name, tensor in models[0].state_dict().items():
        if name in HEAD:
            per_class = tensor.numel() // 10
            head.update({(name, c): slice(at + c * per_class, at + (c + 1) * per_class)
                         for c in range(10)})
        at += tensor.numel()
    merged, position, final = start, [0] * NODES, [None] * NODES
    round_no = 0
    for step in steps:
        if step:
            step.loaded(merged, round_no)
    while any(f is None for f in final):
        sent = []
        for i, model in enumerate(models):
            if final[i] is not None:
                sent.append(final[i])
                continue
            x, y = sites[i]
            for idx in batches[i][position[i]:position[i] + SYNC]:
                optimizers[i].zero_grad()
                logits = model(x[idx])
                if mode == "fedrs":
                    mask = torch.full((10,), float("-inf"))
                    mask[list(seen[i])] = 0
                    logits = logits + mask
                torch.nn.functional.cross_entropy(logits, y[idx]).backward()
                optimizers[i].step()
            position[i] += SYNC
            update = flat(model)
            if mode in ("reset", "fedrs"):
                for (_, c), rows in head.items():
                    if c not in seen[i]:
                        update[rows] = merged[rows]
            if mode in RULES:
                update = steps[i].outgoing(update, NODES)
            sent.append(update)
            if position[i] >= len(batches[i]):
                final[i] = update
        merged = np.mean(sent, axis=0, dtype=np.float32)
        round_no += 1
        for i, model in enumerate(models):
            if steps[i]:
                steps[i].loaded(merged, round_no)
            if final[i] is None:
                load(model, merged)
    load(models[0], merged)
    return accuracy(models[0], test)


def swarm_real(mode: str, seed: int, sites, test, init: str = "common", pick: int = 0,
               drop_last: bool = False) -> float:
    """The real test's schedule (see the module docstring); `mode`: plain or a RULES row."""
    models, batches = [], []
    for i, (_, y) in enumerate(sites):  # the script's order: seed, model, then batches
        torch.manual_seed(seed * 100 + i)
        models.append(torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                          torch.nn.Linear(32, 10)))
        batches.append([idx for _ in range(EPOCHS) for idx in torch.randperm(len(y)).split(BATCH)])
    inits = [flat(m) for m in models]
    merged = np.mean(inits, axis=0, dtype=np.float32) if init == "mean" else inits[pick]
    for model in models:
        load(model, merged)
    optimizers = [torch.optim.Adam(m.parameters()) for m in models]
    steps = [AdaptiveStep(np.ones(merged.size, dtype=bool), *RULES[mode]) if mode in RULES
             else None for _ in models]
    round_no, position, final = 1, [0] * len(models), [None] * len(models)
    for step in steps:
        if step:
            step.loaded(merged, round_no)
    while True:
        sent = []
        for i, model in enumerate(models):
            if final[i] is not None:  # finished: its snapshot, every round
                sent.append(final[i])
                continue
            x, y = sites[i]
            chunk = batches[i][position[i]:position[i] + SYNC]
            for idx in chunk:
                optimizers[i].zero_grad()
                torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                optimizers[i].step()
            position[i] += len(chunk)
            update = flat(model)
            if steps[i]:
                update = steps[i].outgoing(update, len(models))
            sent.append(update)
            if position[i] >= len(batches[i]):  # on_train_end: from now on a snapshot
                final[i] = update
        if all(f is not None for f in final) and drop_last:
            break  # the last one's final update never merged
        merged = np.mean(sent, axis=0, dtype=np.float32)
        round_no += 1
        if all(f is not None for f in final):
            break
        for i, model in enumerate(models):
            if steps[i]:
                steps[i].loaded(merged, round_no)
            if final[i] is None:
                load(model, merged)
    load(models[0], merged)
    return accuracy(models[0], test)


def central(seed: int, sites, test) -> float:
    x = torch.cat([s[0] for s in sites])
    y = torch.cat([s[1] for s in sites])
    model = net(seed * 10)
    optimizer = torch.optim.Adam(model.parameters())
    steps = max(len(s[1]) for s in sites) * EPOCHS // BATCH  # the busiest site's steps
    generator = torch.Generator().manual_seed(seed)
    done = 0
    while done < steps:
        for idx in torch.randperm(len(y), generator=generator).split(BATCH)[:steps - done]:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
            done += 1
    return accuracy(model, test)


def main() -> None:
    global NODES, EPOCHS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--iid", action="store_true")
    parser.add_argument("--nodes", type=int, default=NODES)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--modes", default="plain,reset,fedrs,scaled,unbounded,bounded0.8,gain1,default,central")
    parser.add_argument("--real", action="store_true", help="the real test's schedule")
    parser.add_argument("--init", choices=("mean", "common"), default="common")
    parser.add_argument("--pick", type=int, default=0, help="whose init --init common adopts")
    parser.add_argument("--drop-last", action="store_true")
    args = parser.parse_args()
    NODES, EPOCHS = args.nodes, args.epochs
    torch.set_num_threads(1)
    sites, test = data(args.iid)
    split = "random (iid)" if args.iid else "by label"
    schedule = (f"real schedule, {args.init} init, the last update "
                f"{'dropped' if args.drop_last else 'merged'}" if args.real else "lockstep")
    print(f"digits split {split} over {NODES} sites, Adam (defaults), sync every {SYNC} "
          f"batches, {EPOCHS} epochs, {schedule}; held-out accuracy over {args.seeds} seeds")
    print(f"{'what a node sends':<12} {'median':>7} {'min':>6} {'max':>6}")
    for mode in args.modes.split(","):
        runs = [central(s, sites, test) if mode == "central"
                else swarm_real(mode, s, sites, test, args.init, args.pick, args.drop_last) if args.real
                else swarm(mode, s, sites, test) for s in range(args.seeds)]
        print(f"{mode:<12} {statistics.median(runs):7.3f} {min(runs):6.3f} {max(runs):6.3f}  "
              f"(seed 0: {runs[0]:.3f})",
              flush=True)


if __name__ == "__main__":
    main()
