"""Measure what HDCCF's masks do on real data (paper eq. 25 and 27), before choosing D^{u-u}.

For in-batch negatives drawn as the sampler draws them (P neighbours per row, the other rows'
neighbours are a row's negatives), report the share that
- are observed training positives of the anchor (eq. 25: (u^-, i) in D, (u, i^-) in D);
- share at least one training item with the anchor user / user with the anchor item
  (the literal reading of D^{u-u} in eq. 27).

    python benchmarks/measure_masks.py --data_path=../shared/datasets --dataset=ml-1m --batches=20
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--data_path", default="../shared/datasets")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--neighbors", type=int, default=2)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    data_path = os.path.abspath(args.data_path)
    os.chdir(tempfile.mkdtemp())
    sys.argv = sys.argv[:1]

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    import recbole_hdccf  # noqa: F401
    from recbole_hdccf.paths import protocol_file
    from recbole_hdccf.sampler import TrainGraph

    config = Config(
        model="HDCCF",
        dataset=args.dataset,
        config_file_list=[str(protocol_file("paper"))],
        config_dict={"data_path": data_path, "show_progress": False},
    )
    train, _, _ = data_preparation(config, create_dataset(config))
    graph = TrainGraph.from_dataset(train._dataset)
    rng = np.random.default_rng(0)
    inter = train._dataset.inter_feat
    users_all = inter["user_id"].numpy()
    items_all = inter["item_id"].numpy()
    m, p = args.batch_size, args.neighbors
    stats = {k: [] for k in ("ui_user_obs", "ui_item_obs", "uu_share_any", "ii_share_any")}
    for _ in range(args.batches):
        rows = rng.choice(len(users_all), size=m, replace=False)
        u, i = users_all[rows], items_all[rows]
        n_items, n_users = graph.sample(u, i, p, rng)
        pool_items = torch.as_tensor(n_items.reshape(-1))
        pool_users = torch.as_tensor(n_users.reshape(-1))
        ut, it = torch.as_tensor(u), torch.as_tensor(i)
        own = torch.arange(m).repeat_interleave(p)[None, :] == torch.arange(m)[:, None]
        pool = ~own
        user_obs = graph.contains(pool_users.expand(m, -1), it[:, None].expand(-1, m * p))
        item_obs = graph.contains(ut[:, None].expand(-1, m * p), pool_items.expand(m, -1))
        uu_any = graph.share_neighbor(ut, pool_users, kind="user")
        ii_any = graph.share_neighbor(it, pool_items, kind="item")
        for key, mask in (
            ("ui_user_obs", user_obs),
            ("ui_item_obs", item_obs),
            ("uu_share_any", uu_any),
            ("ii_share_any", ii_any),
        ):
            stats[key].append((mask & pool).sum().item() / pool.sum().item())
    print(f"{args.dataset}: M={m}, P={p}, {args.batches} batches; share of in-batch negatives")
    labels = {
        "ui_user_obs": "negative users u- that observed the anchor item (eq. 25, masked)",
        "ui_item_obs": "negative items i- the anchor user observed (eq. 25, masked)",
        "uu_share_any": "negative users sharing >= 1 training item with the anchor user",
        "ii_share_any": "negative items sharing >= 1 training user with the anchor item",
    }
    for key, values in stats.items():
        print(f"  {np.mean(values):7.2%}  {labels[key]}")


if __name__ == "__main__":
    main()
