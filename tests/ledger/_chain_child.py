"""Child process for the kill -9 test: builds a ledger, says "ready", then keeps
sealing rounds (printing each acknowledged one) until it is killed.

With a second argument "compact" the journal is compacted after nearly every
block, so the kill also lands inside compactions."""
import hashlib
import json
import sys
from pathlib import Path

from swarm.ledger import EmbeddedChain, LedgerClient, fund, load_or_create_account, open_or_deploy


def h(tag) -> bytes:
    return hashlib.sha256(str(tag).encode()).digest()


def main() -> None:
    data_dir = Path(sys.argv[1])
    compact = sys.argv[2:] == ["compact"]
    chain = EmbeddedChain(data_dir, **({"compact_ratio": 1.2, "compact_min_bytes": 0} if compact else {}))
    sn = open_or_deploy(chain.w3, data_dir, sentinel_node_id="site0/sn-1", fingerprint=h("fp-sn0"),
                        endpoint="10.0.0.1:30304", funder=chain.dev_accounts[0])
    sn.configure(2, {"merge_method": "mean"})
    acc2 = load_or_create_account(data_dir / "sn2.key")
    fund(chain.w3, sn.account, acc2.address, 10**19)
    sn.register_sn("site9/sn-1", h("fp-sn9"), "10.0.0.9:30304", acc2.address)
    names = [f"site{i}/sl-1" for i in range(4)]
    for name in names:
        sn.register_node(name, "sl", h("fp-" + name), f"{name}:30305")
    LedgerClient(chain.w3, sn.address, acc2).register_node("site9/sl-1", "sl", h("fp-site9/sl-1"), "x")
    for r in range(1, 6):
        sn.check_in_and_seal(r, names, [r] * 4, [h(f"u{r}-{i}") for i in range(4)])
        sn.commit_merged_batch(r, names, [h(f"m{r}")] * len(names))  # a majority agrees
    sn.mark_finished(names[3])
    sn.revoke(h("fp-" + names[2]), "test revocation")
    print(json.dumps({"ready": True, "address": sn.address}), flush=True)
    r = 6
    while True:  # until SIGKILL: the kill lands mid-transaction or mid-commit
        sn.check_in_and_seal(r, names[:2], [1, 1], [h(f"u{r}-0"), h(f"u{r}-1")])
        print(f"sealed {r}", flush=True)
        r += 1


if __name__ == "__main__":
    main()
